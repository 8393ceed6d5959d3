"""Training of the hypernetwork with the SRM frozen: cross-entropy over all items through the generated head.

Inputs are cached positions (static user state, recent items, target) and the SRM's frozen item embeddings.
Resumable like the SRM trainer: best weights in ``model.safetensors``, per-epoch state in ``state/``.
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
import torch.nn.functional as F
from tqdm.auto import tqdm

from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import ParamGenerator
from srm_device.head import apply_head
from srm_device.training.checkpoint import save_weights
from tandem.errors import TandemError
from tandem.io import atomic_write_json
from tandem.train_state import load_state, save_state

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


def _check_resume(out: Path, meta: dict) -> None:
    old = json.loads((out / "config.json").read_text())

    def strip(m: dict) -> dict:
        m = json.loads(json.dumps(m))
        for key in ParamGenConfig.RESUMABLE_CHANGES:
            m.get("paramgen_config", {}).pop(key, None)
        return m

    if strip(old) != strip(meta):
        raise TandemError(f"{out} holds a parameter generator trained with other settings or another SRM; pass "
                          f"--overwrite to start again, or choose another --out")


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
        _check_resume(out, meta)
    atomic_write_json(out / "config.json", meta)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    item_emb = item_emb.detach()[1:]  # (n_items, d), frozen; column j is item j+1
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = load_state(out / "state", gen, opt) or {
        "next_epoch": 0, "best_valid": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "stopped": None}
    if state["stopped"] == "max_epochs" and state["next_epoch"] < cfg.epochs:
        state["stopped"] = None
    n = len(train.target)
    epochs = range(state["next_epoch"], cfg.epochs) if state["stopped"] is None else range(0)
    bar = tqdm(epochs, desc="train paramgen", unit="epoch", initial=state["next_epoch"], total=cfg.epochs,
               disable=None if progress is None else not progress)
    log_lines = progress is None and bar.disable
    for epoch in bar:
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed + epoch)
        perm = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(n))
        gen.train()
        total, steps = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            user = generated_user(gen, train.user[idx], train.recent[idx])  # (b, d)
            loss = F.cross_entropy(user @ item_emb.T, train.target[idx] - 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        gen.eval()
        with torch.no_grad():
            valid = validate(gen)
        score = valid[VALID_METRIC]
        if state["best_valid"] is None or score > state["best_valid"][VALID_METRIC]:
            state.update(best_valid=valid, best_epoch=epoch, bad_epochs=0)
            save_weights(gen, out / "model.safetensors")
        else:
            state["bad_epochs"] += 1
        row = {"epoch": epoch, "loss": total / max(1, steps), "seconds": time.perf_counter() - t0,
               f"valid_{VALID_METRIC}": score}
        state["history"].append(row)
        state["next_epoch"] = epoch + 1
        if state["bad_epochs"] >= cfg.patience:
            state["stopped"] = "early_stopped"
        elif epoch + 1 >= cfg.epochs:
            state["stopped"] = "max_epochs"
        save_state(out / "state", gen, opt, state)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{score:.4f}")
        if log_lines:
            print(f"paramgen epoch {epoch + 1}/{cfg.epochs}  loss {row['loss']:.4f}  valid ndcg@10 {score:.4f}",
                  file=sys.stderr, flush=True)
        if state["stopped"] == "early_stopped":
            break
    bar.close()
    if state["best_valid"] is None:
        raise TandemError(f"no epoch was trained in {out}; raise --epochs")
    return state
