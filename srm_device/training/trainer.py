"""Resumable training loop with early stopping on a validation metric.

Layout of an output folder::

    config.json          model, hyperparameters, dataset options and fingerprint (written first)
    model.safetensors    best weights so far (by validation NDCG@10)
    state/               last epoch's weights, optimizer and trainer_state.json, replaced atomically each epoch

Each epoch reseeds torch and numpy with ``seed + epoch``, so a run resumed from ``state/`` produces the same weights as
one that was never interrupted. The validation function is injected, which keeps this package free of evaluation code.
Under ``torchrun`` the processes share every batch (:mod:`tandem.distributed`) and only rank 0 writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srm_device.models import SequentialRecommender
from srm_device.training import checkpoint as ckpt
from srm_device.training.config import TrainConfig
from srm_device.training.windows import make_windows
from tandem import distributed
from tandem.train_state import check_resume, fit_epochs

VALID_METRIC = "ndcg@10"
STATE = "state"

Validator = Callable[[SequentialRecommender], dict[str, float]]
EpochHook = Callable[[int, dict], None]


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    stopped: str  # "early_stopped" | "max_epochs"
    history: list[dict]
    train_seconds: float


def fit(
    model: SequentialRecommender,
    meta: dict,
    train_sequences: list[np.ndarray],
    validate: Validator,
    cfg: TrainConfig,
    out: str | Path,
    overwrite: bool = False,
    on_epoch_end: EpochHook | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``model`` on causal windows of ``train_sequences``; keep the best weights by ``validate``."""
    cfg.validate()
    out = Path(out)
    meta = {**meta, "train_config": cfg.to_dict()}
    if distributed.is_main():  # under torchrun the other processes wait, then read what it wrote
        if overwrite and out.exists():
            shutil.rmtree(out)
        if (out / ckpt.CONFIG).exists():
            check_resume(out, ckpt.read_config(out), meta, "train_config", TrainConfig.RESUMABLE_CHANGES)
        else:
            out.mkdir(parents=True, exist_ok=True)
        ckpt.write_config(out, meta)  # records the latest epochs/patience too
    distributed.barrier()

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    inputs, targets = make_windows(train_sequences, model.config.max_len, cfg.window_stride)
    x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(targets)  # (w, L), (w, L)
    state = fit_epochs(
        model, opt, lambda idx: model.calculate_loss(x_all[idx], y_all[idx]), len(x_all), lambda: validate(model),
        lambda: ckpt.save_weights(model, out / ckpt.WEIGHTS), out / STATE, epochs=cfg.epochs,
        patience=cfg.patience, batch_size=cfg.batch_size, seed=cfg.seed, desc=f"train {model.name}",
        metric=VALID_METRIC, progress=progress, on_epoch_end=on_epoch_end)
    return TrainResult(best_epoch=state["best_epoch"], best_valid=state["best_valid"], epochs_run=state["next_epoch"],
                       stopped=state["stopped"] or "max_epochs", history=state["history"],
                       train_seconds=state["train_seconds"])
