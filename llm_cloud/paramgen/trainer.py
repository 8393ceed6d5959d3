"""Training of the hypernetwork with the SRM frozen: cross-entropy over all items through the generated head.

Inputs are cached positions (static user state, recent items, target) and the SRM's frozen item embeddings.
Resumable like the SRM trainer: best weights in ``model.safetensors``, per-epoch state in ``state/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import ParamGenerator
from srm_device.head import apply_head
from srm_device.training.checkpoint import save_weights
from tandem.io import atomic_write_json
from tandem.train_state import check_resume, fit_epochs

VALID_METRIC = "ndcg@10"


@dataclass
class Positions:
    user: torch.Tensor  # (n, d) static user representations from the frozen SRM
    recent: torch.Tensor  # (n, k) most recent items, left-padded with 0
    target: torch.Tensor  # (n,) next item


def generated_user(gen: ParamGenerator, user: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
    """User representation after the generated head: (n, d), (n, k) -> (n, d)."""
    a, b, bias = gen.split(gen(recent))  # (n, d, r), (n, d, r), (n, d)
    return apply_head(user, a, b, bias)  # (n, d)


def fit(gen: ParamGenerator, item_emb: torch.Tensor, train: Positions,
        validate: Callable[[ParamGenerator], dict[str, float]], cfg: ParamGenConfig, out: str | Path, meta: dict,
        overwrite: bool = False, progress: bool | None = None) -> dict:
    """Train ``gen``; return the trainer state (best validation metrics, history)."""
    cfg.validate()
    out = Path(out)
    meta = {**meta, "paramgen_config": cfg.to_dict()}
    if overwrite and out.exists():
        shutil.rmtree(out)
    if (out / "config.json").exists():
        old = json.loads((out / "config.json").read_text())
        check_resume(out, old, meta, "paramgen_config", ParamGenConfig.RESUMABLE_CHANGES)
    atomic_write_json(out / "config.json", meta)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    item_emb = item_emb.detach()[1:]  # (n_items, d), frozen; column j is item j+1
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        user = generated_user(gen, train.user[idx], train.recent[idx])  # (b, d)
        return F.cross_entropy(user @ item_emb.T, train.target[idx] - 1)

    return fit_epochs(gen, opt, loss_fn, len(train.target), lambda: validate(gen),
                      lambda: save_weights(gen, out / "model.safetensors"), out / "state", epochs=cfg.epochs,
                      patience=cfg.patience, batch_size=cfg.batch_size, seed=cfg.seed, desc="train paramgen",
                      metric=VALID_METRIC, progress=progress)
