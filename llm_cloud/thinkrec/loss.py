"""ThinkRec's training loss (arXiv 2505.15091): α·BCE(yes-logit, label) + β·LM, per example.

- The yes-logit is read where the model predicts the answer token (right after ``Answer:``): z = ℓ(" Yes") − ℓ(" No"),
  the log-odds of the two-way softmax that scoring uses, so BCE(z, label) trains exactly the probability we report.
- LM is the mean next-token cross-entropy over the example's completion tokens (labels ≠ −100).
- (α, β) come with each example: (0.1, 0.9) for targets with a reasoning trace (mostly language modelling), (0.9, 0.1)
  for bare labels (mostly classification).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
TRACE_WEIGHTS = (0.1, 0.9)  # (α, β) for trace targets
BARE_WEIGHTS = (0.9, 0.1)  # (α, β) for bare labels


def yes_logit(logits: torch.Tensor, answer_pos: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """(B,): ℓ_yes − ℓ_no at each example's answer position; logits (B, T, V), answer_pos (B,)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at = logits[rows, answer_pos]  # (B, V)
    return (at[:, yes_id] - at[:, no_id]).float()


def lm_per_example(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,): mean cross-entropy of each example's target tokens (labels (B, T), −100 = not a target)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]  # (B, T-1, V), (B, T-1)
    ce = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE, reduction="none")  # (B, T-1)
    mask = (shift_labels != IGNORE).float()
    return (ce * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def thinkrec_loss(logits: torch.Tensor, labels: torch.Tensor, answer_pos: torch.Tensor, target: torch.Tensor,
                  alpha: torch.Tensor, beta: torch.Tensor, yes_id: int, no_id: int) -> tuple[torch.Tensor, dict]:
    """mean_b(α_b·BCE_b + β_b·LM_b), and its parts (detached means) for logging."""
    z = yes_logit(logits, answer_pos, yes_id, no_id)  # (B,)
    bce = F.binary_cross_entropy_with_logits(z, target.float(), reduction="none")  # (B,)
    lm = lm_per_example(logits, labels)  # (B,)
    loss = (alpha * bce + beta * lm).mean()
    return loss, {"bce": float(bce.mean().detach()), "lm": float(lm.mean().detach())}
