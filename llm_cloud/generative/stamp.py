"""STAMP: semantic adaptive pruning of the input and multi-step auxiliary prediction of the output, while training
(Zhan, Fu, Lv, Lv, Zhang, "Semantic Trimming and Auxiliary Multi-step Prediction for Generative Recommendation",
arXiv 2604.05329). The paper's code is not public; both halves below are our design from its description.

**Semantic adaptive pruning (SAP)** reuses RASTP's machinery (:func:`llm_cloud.generative.rastp.token_pruning`: from
decoder layer ``l`` on only the chosen tokens are processed; the others bypass the later layers and still take their
loss) with a different choice of tokens:

* *attention centrality*: the attention a key received in layers ``< l`` divided by the number of real queries that
  could attend to it. RASTP's plain sum favours early keys, which every later query can see;
* *semantic saliency*: the L2 norm of the token's hidden state divided by the mean norm of the tokens of the same
  code level in its row, so that coarse and fine code tokens (whose norms differ by level) compete on equal terms;
* the score is their product; each batch keeps ``ceil(keep * n)`` tokens per row, ``n`` being the longest *real*
  row of the batch (not its padded length), so batches of short windows keep fewer tokens.

**Multi-step auxiliary prediction (MAP)**: besides the next token, the final hidden state at each position also
predicts the same code level of each of the ``steps`` items after the next one (the token ``1 + s * width`` ahead,
``width`` = code tokens per item), through a residual linear map per step (zero-initialised) and the model's own tied
LM head. The auxiliary heads exist only while training: they are removed before the checkpoint is saved, so the served
model is a plain Hugging Face model. The loss is ``main + weight * mean_s(aux_s)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llm_cloud.generative.prompts import IGNORE
from llm_cloud.generative.rastp import Chooser, select_tokens

HEADS_ATTR = "stamp_heads"  # the auxiliary heads' attribute on the causal LM while training


def sap_scores(received: torch.Tensor, hidden: torch.Tensor, pad: torch.Tensor, width: int,
               prefix: int) -> torch.Tensor:
    """(b,t) SAP importance: attention received per viewing query, times the hidden norm relative to the mean norm of
    the row's tokens of the same code level; padding gets -inf. Positions ``< prefix`` form their own level."""
    b, t = pad.shape
    padf = pad.float()  # (b,t)
    viewers = padf.flip(-1).cumsum(-1).flip(-1)  # (b,t) real queries at or after each key
    centrality = received.float() / viewers.clamp(min=1.0)  # (b,t)
    norm = hidden.float().norm(dim=-1)  # (b,t)
    pos = torch.arange(t, device=pad.device)  # (t,)
    level = torch.where(pos < prefix, torch.full_like(pos, width), (pos - prefix) % width)  # (t,)
    onehot = F.one_hot(level, width + 1).float()  # (t,L+1)
    mean = ((norm * padf) @ onehot) / (padf @ onehot).clamp(min=1.0)  # (b,L+1)
    relative = norm / mean[:, level].clamp(min=1e-6)  # (b,t)
    return (centrality * relative).masked_fill(~pad.bool(), float("-inf"))  # (b,t)


def sap_chooser(keep: float, width: int, prefix: int) -> Chooser:
    """SAP's choice for :func:`~llm_cloud.generative.rastp.token_pruning`: per row the ``ceil(keep * n)`` tokens of
    highest :func:`sap_scores` in causal order, ``n`` the longest real row of the batch."""
    def choose(received: torch.Tensor, hidden: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        longest = int(pad.sum(-1).max())
        k = max(1, min(hidden.shape[1], math.ceil(keep * longest)))
        return select_tokens(sap_scores(received, hidden, pad, width, prefix), k)  # (b,k)

    return choose


class MultiStepHeads(nn.Module):
    """One zero-initialised residual linear map per auxiliary step: ``h -> h + W_s h`` (the LM head follows)."""

    def __init__(self, hidden_size: int, steps: int) -> None:
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(steps))
        for m in self.maps:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)


def multi_step_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module, heads: MultiStepHeads,
                    width: int) -> torch.Tensor:
    """Mean over steps ``s = 1..S`` of the cross-entropy of predicting, from the final hidden state (b,t,d) at
    position ``p``, the label at ``p + 1 + s * width`` (labels (b,t), IGNORE where not a target). Steps whose shift
    exceeds the sequence, or that have no target in the batch, are left out; zero when none is left."""
    t = hidden.shape[1]
    losses = []
    for s, proj in enumerate(heads.maps, start=1):
        shift = 1 + s * width
        target = labels[:, shift:]  # (b,t-shift)
        if shift >= t or not (target != IGNORE).any():
            continue
        h = hidden[:, :-shift]  # (b,t-shift,d)
        logits = lm_head(h + proj(h)).float()  # (b,t-shift,V)
        losses.append(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE))
    if not losses:
        return hidden.sum() * 0.0
    return torch.stack(losses).mean()


def attach_heads(model: nn.Module, steps: int) -> MultiStepHeads:
    """Create the auxiliary heads as a submodule of ``model`` (so the optimizer and trainer checkpoints see them)."""
    heads = MultiStepHeads(model.config.hidden_size, steps)
    setattr(model, HEADS_ATTR, heads)
    return heads


def detach_heads(model: nn.Module) -> None:
    """Remove the auxiliary heads before saving, so the checkpoint is the plain causal LM."""
    if hasattr(model, HEADS_ATTR):
        delattr(model, HEADS_ATTR)


def final_hidden_hook(model: nn.Module, store: dict) -> torch.utils.hooks.RemovableHandle:
    """Keep the output of the decoder's final norm (b,t,d) in ``store["hidden"]`` at each forward (pruned or not)."""
    return model.model.norm.register_forward_hook(lambda _m, _i, out: store.__setitem__("hidden", out))
