"""Resumable training loop with early stopping on a validation metric.

Layout of an output folder::

    config.json          model, hyperparameters, dataset options and fingerprint (written first)
    model.safetensors    best weights so far (by validation NDCG@10)
    state/               last epoch's weights, optimizer and trainer_state.json, replaced atomically each epoch

Each epoch reseeds torch and numpy with ``seed + epoch``, so a run resumed from ``state/`` produces the same weights as
one that was never interrupted. The validation function is injected, which keeps this package free of evaluation code.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from srm_device.models import SequentialRecommender
from srm_device.training import checkpoint as ckpt
from srm_device.training.config import TrainConfig
from srm_device.training.windows import make_windows
from tandem.errors import TandemError
from tandem.train_state import load_state, save_state

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


def _comparable(meta: dict) -> dict:
    meta = json.loads(json.dumps(meta))
    for key in TrainConfig.RESUMABLE_CHANGES:
        meta.get("train_config", {}).pop(key, None)
    return meta


def _check_compatible(out: Path, meta: dict) -> None:
    old = ckpt.read_config(out)
    old.pop("format_version", None)
    a, b = _comparable(old), _comparable(meta)
    if a != b:
        diffs = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        key = diffs[0]
        detail = key
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            sub = [k for k in sorted(set(a[key]) | set(b[key])) if a[key].get(k) != b[key].get(k)]
            detail = f"{key}.{sub[0]}: {a[key].get(sub[0])!r} -> {b[key].get(sub[0])!r}" if sub else key
        raise TandemError(f"{out} holds a checkpoint trained with other settings ({detail}); pass --overwrite to "
                          f"start again, or choose another --out")


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
    if overwrite and out.exists():
        shutil.rmtree(out)
    if (out / ckpt.CONFIG).exists():
        _check_compatible(out, meta)
    else:
        out.mkdir(parents=True, exist_ok=True)
    ckpt.write_config(out, meta)  # records the latest epochs/patience too

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = load_state(out / STATE, model, opt) or {
        "next_epoch": 0, "best_valid": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "stopped": None,
        "train_seconds": 0.0,
    }
    if state["stopped"] == "max_epochs" and state["next_epoch"] < cfg.epochs:
        state["stopped"] = None  # more epochs were asked for: continue

    inputs, targets = make_windows(train_sequences, model.config.max_len, cfg.window_stride)
    x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(targets)  # (w, L), (w, L)
    n_batches = (len(x_all) + cfg.batch_size - 1) // cfg.batch_size

    epochs = range(state["next_epoch"], cfg.epochs) if state["stopped"] is None else range(0)
    bar = tqdm(epochs, desc=f"train {model.name}", unit="epoch", disable=None if progress is None else not progress,
               initial=state["next_epoch"], total=cfg.epochs)
    log_lines = progress is None and bar.disable  # no terminal (CI, a log file): one line per epoch instead
    for epoch in bar:
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed + epoch)
        perm = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(len(x_all)))
        model.train()
        total = 0.0
        for b in range(n_batches):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = model.calculate_loss(x_all[idx], y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            valid = validate(model)
        seconds = time.perf_counter() - t0
        score = valid[VALID_METRIC]
        if not np.isfinite(score):
            raise RuntimeError(f"validation {VALID_METRIC} is {score} at epoch {epoch}")
        improved = state["best_valid"] is None or score > state["best_valid"][VALID_METRIC]
        if improved:
            state.update(best_valid=valid, best_epoch=epoch, bad_epochs=0)
            ckpt.save_weights(model, out / ckpt.WEIGHTS)
        else:
            state["bad_epochs"] += 1
        row = {"epoch": epoch, "loss": total / max(1, n_batches), "seconds": seconds,
               **{f"valid_{k}": v for k, v in valid.items() if k in ("ndcg@10", "hr@10", "mrr@10")}}
        state["history"].append(row)
        state["next_epoch"] = epoch + 1
        state["train_seconds"] += seconds
        if state["bad_epochs"] >= cfg.patience:
            state["stopped"] = "early_stopped"
        elif epoch + 1 >= cfg.epochs:
            state["stopped"] = "max_epochs"
        save_state(out / STATE, model, opt, state)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{score:.4f}",
                        best=f"{state['best_valid'][VALID_METRIC]:.4f}@{state['best_epoch']}")
        if log_lines:
            print(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.4f}  valid ndcg@10 {score:.4f}  best "
                  f"{state['best_valid'][VALID_METRIC]:.4f} @ {state['best_epoch'] + 1}  {seconds:.1f}s",
                  file=sys.stderr, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if state["stopped"] == "early_stopped":
            break
    bar.close()
    if state["best_valid"] is None:
        raise TandemError(f"no epoch was trained in {out}; raise --epochs")
    return TrainResult(best_epoch=state["best_epoch"], best_valid=state["best_valid"], epochs_run=state["next_epoch"],
                       stopped=state["stopped"] or "max_epochs", history=state["history"],
                       train_seconds=state["train_seconds"])
