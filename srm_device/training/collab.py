"""Collaborative fine-tuning of a trained SRM inside the cloud LLM's candidate lists (LSC4Rec, Lv et al. 2025,
arXiv 2502.08667, step 2 of the collaboration).

On the device the SRM reranks the LLM's top-N list, so what matters is the order it gives *inside* that list. The
LLM's candidates are hard negatives: items a strong recommender already finds plausible for this user. An SRM trained
with cross-entropy over the whole catalogue spends most of its gradient on pushing down easy negatives; this loss
spends it on the LLM's candidates.

Loss per example (history, target, candidates c_1..c_n):

    L = CE(logits over {c_1..c_n} ∪ {target}, target) + full_ce_weight · CE(logits over all items, target)

* The target is always a class: it is appended as an extra column, and a copy of it inside the list is masked, so a
  target the LLM missed still teaches the SRM to rank it above the LLM's wrong candidates.
* The full-catalogue term keeps the SRM a usable ranker of everything (cold start, stale lists, requests the cloud
  cannot answer): with the in-list term alone, items the LLM never proposes get no gradient and drift, and whole-
  catalogue NDCG falls. The default 0.5 weighs the two about equally. Epoch selection includes the original
  weights, so a fine-tuning that does not help on validation leaves the SRM unchanged (on ML-100K with the tiny
  LLM and 2 prefixes per user it did not help: every setting tried lowered validation in-list NDCG@10).

This module is pure SRM/torch: it knows nothing of the LLM or of evaluation; examples arrive as padded tensors and
validation as a function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from srm_device.models import SequentialRecommender
from srm_device.training import checkpoint as ckpt
from tandem.train_state import fit_epochs

VALID_METRIC = "ndcg@10"


@dataclass
class CollabExamples:
    """Training examples as tensors: the history (right-padded), its length, the next item, the LLM's list."""

    seq: torch.Tensor  # (m, t) item ids, right-padded with 0
    lengths: torch.Tensor  # (m,)
    targets: torch.Tensor  # (m,)
    candidates: torch.Tensor  # (m, n) LLM candidate ids, best first; 0 = no item

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def collab_loss(model: SequentialRecommender, seq: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                candidates: torch.Tensor, full_ce_weight: float = 0.5) -> torch.Tensor:
    """In-list cross-entropy (candidates ∪ {target}) plus ``full_ce_weight`` × full-catalogue cross-entropy."""
    user = model.sequence_output(seq, lengths)  # (b, d)
    emb = model.item_embeddings()  # (N+1, d)
    classes = torch.cat([candidates, targets[:, None]], dim=1)  # (b, n+1), the target is the last class
    logits = torch.einsum("bd,bcd->bc", user, emb[classes])  # (b, n+1)
    drop = (candidates == targets[:, None]) | (candidates == 0)  # (b, n) the target's copy in the list, padding
    drop = torch.cat([drop, torch.zeros_like(drop[:, :1])], dim=1)  # (b, n+1)
    logits = logits.masked_fill(drop, float("-inf"))  # (b, n+1)
    label = torch.full_like(targets, classes.shape[1] - 1)  # (b,)
    loss = F.cross_entropy(logits, label)
    if full_ce_weight > 0:
        full = user @ emb[1:].T  # (b, N)
        loss = loss + full_ce_weight * F.cross_entropy(full, targets - 1)
    return loss


@dataclass
class FinetuneResult:
    best_epoch: int  # -1: no epoch beat the original weights, which were kept
    best_valid: dict[str, float]
    original_valid: dict[str, float]
    epochs_run: int
    stopped: str
    history: list[dict]
    train_seconds: float


def finetune(model: SequentialRecommender, examples: CollabExamples,
             validate: Callable[[SequentialRecommender], dict[str, float]], out: str | Path, *, epochs: int,
             lr: float, batch_size: int, full_ce_weight: float, seed: int, patience: int = 3,
             weight_decay: float = 0.0, progress: bool | None = None) -> FinetuneResult:
    """Fine-tune ``model`` in place with Adam on :func:`collab_loss`; keep the epoch with the best ``validate``
    NDCG@10, or the original weights when no epoch beats them. Resumable: per-epoch state lives in ``out/state``
    and the best weights in ``out/best.safetensors``; ``model`` ends with the selected weights."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best_path = out / "best.safetensors"
    model.eval()
    with torch.no_grad():
        original = validate(model)
    original_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        return collab_loss(model, examples.seq[idx], examples.lengths[idx], examples.targets[idx],
                           examples.candidates[idx], full_ce_weight)

    state = fit_epochs(model, opt, loss_fn, len(examples), lambda: validate(model),
                       lambda: ckpt.save_weights(model, best_path), out / "state", epochs=epochs, patience=patience,
                       batch_size=batch_size, seed=seed, desc=f"collab {model.name}", metric=VALID_METRIC,
                       progress=progress)
    best_epoch, best_valid = state["best_epoch"], state["best_valid"]
    if best_valid[VALID_METRIC] > original[VALID_METRIC]:
        ckpt.load_weights(model, best_path)
    else:  # fine-tuning did not help on validation: keep the SRM as it was
        model.load_state_dict(original_state)
        best_epoch, best_valid = -1, original
    model.eval()
    return FinetuneResult(best_epoch=best_epoch, best_valid=best_valid, original_valid=original,
                          epochs_run=state["next_epoch"], stopped=state["stopped"], history=state["history"],
                          train_seconds=state["train_seconds"])
