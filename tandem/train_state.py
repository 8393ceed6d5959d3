"""The resumable epoch loop of Tandem's trainers, and its per-epoch state (weights, optimizer, progress) saved as one
atomically replaced folder.

A training loop that saves after every epoch and loads at start is resumable: an interrupted run loses at most the
epoch in progress, and never leaves weights and progress that disagree.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from tandem import distributed
from tandem.errors import TandemError
from tandem.io import atomic_directory


def save_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    with atomic_directory(folder) as tmp:
        weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "last.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")


def load_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Restore model and optimizer from ``folder``; None if there is no saved state."""
    if not (folder / "trainer_state.json").is_file():
        return None
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        model.load_state_dict(load_file(str(folder / "last.safetensors")), strict=True)
        opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    except (OSError, json.JSONDecodeError, RuntimeError, ValueError, SafetensorError) as exc:
        raise TandemError(f"training state in {folder} is damaged ({str(exc).splitlines()[0]}); pass --overwrite "
                          f"to start again") from None
    return state


def check_resume(out: Path, old: dict, new: dict, config_key: str, resumable: tuple[str, ...]) -> None:
    """Refuse to resume ``out`` when its recorded settings differ from ``new`` other than in ``resumable`` fields of
    ``new[config_key]``; the message names the first difference."""

    def comparable(meta: dict) -> dict:
        meta = json.loads(json.dumps(meta))
        meta.pop("format_version", None)
        for key in resumable:
            meta.get(config_key, {}).pop(key, None)
        return meta

    a, b = comparable(old), comparable(new)
    if a == b:
        return
    key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
    detail = key
    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
        sub = [k for k in sorted(set(a[key]) | set(b[key])) if a[key].get(k) != b[key].get(k)]
        detail = f"{key}.{sub[0]}: {a[key].get(sub[0])!r} -> {b[key].get(sub[0])!r}" if sub else key
    raise TandemError(f"{out} holds a run trained with other settings ({detail}); pass --overwrite to start again, "
                      f"or choose another --out")


def fit_epochs(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n_examples: int,
    validate: Callable[[], dict[str, float]],
    save_best: Callable[[], None],
    state_dir: Path,
    *,
    epochs: int,
    patience: int,
    batch_size: int,
    seed: int,
    desc: str,
    metric: str = "ndcg@10",
    progress: bool | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """The resumable epoch loop shared by Tandem's trainers; returns the final trainer state.

    Each epoch reseeds torch and numpy with ``seed + epoch`` (so a resumed run equals an uninterrupted one), shuffles
    ``n_examples`` indices into batches, takes an Adam-style step on ``loss_fn(batch indices)``, validates, keeps the
    best weights by ``metric`` through ``save_best``, and saves its state to ``state_dir``. It stops early after
    ``patience`` epochs without improvement. A run stopped at ``epochs`` continues when more epochs are asked for.

    Under ``torchrun`` each process takes its share of every batch and the gradients are summed
    (:mod:`tandem.distributed`); only rank 0 saves, and every process ends with the same weights.
    """
    rank, world = distributed.init()
    state = load_state(state_dir, model, opt) or {
        "next_epoch": 0, "best_valid": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "stopped": None,
        "train_seconds": 0.0,
    }
    if state["stopped"] == "max_epochs" and state["next_epoch"] < epochs:
        state["stopped"] = None  # more epochs were asked for: continue
    if world > 1:
        distributed.broadcast_module(model)
        if rank != 0:
            progress = False
    n_batches = (n_examples + batch_size - 1) // batch_size
    todo = range(state["next_epoch"], epochs) if state["stopped"] is None else range(0)
    bar = tqdm(todo, desc=desc, unit="epoch", disable=None if progress is None else not progress,
               initial=state["next_epoch"], total=epochs)
    log_lines = progress is None and bar.disable  # no terminal (CI, a log file): one line per epoch instead
    for epoch in bar:
        t0 = time.perf_counter()
        torch.manual_seed(seed + epoch)
        perm = torch.from_numpy(np.random.default_rng(seed + epoch).permutation(n_examples))
        model.train()
        total = 0.0
        for b in range(n_batches):
            batch = perm[b * batch_size : (b + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            if world == 1:
                loss = loss_fn(batch)
                loss.backward()
            else:  # this process's share, its loss weighted by that share; the gradients are then summed
                share = batch[rank::world]
                loss = loss_fn(share) if len(share) else torch.zeros(())
                if len(share):
                    (loss * (len(share) / len(batch))).backward()
                distributed.sum_gradients(model)
            opt.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            valid = validate()
        seconds = time.perf_counter() - t0
        score = valid[metric]
        if not np.isfinite(score):
            raise RuntimeError(f"validation {metric} is {score} at epoch {epoch}")
        if state["best_valid"] is None or score > state["best_valid"][metric]:
            state.update(best_valid=valid, best_epoch=epoch, bad_epochs=0)
            if rank == 0:
                save_best()
        else:
            state["bad_epochs"] += 1
        row = {"epoch": epoch, "loss": total / max(1, n_batches), "seconds": seconds,
               **{f"valid_{k}": v for k, v in valid.items() if k in ("ndcg@10", "hr@10", "mrr@10")}}
        state["history"].append(row)
        state["next_epoch"] = epoch + 1
        state["train_seconds"] += seconds
        if state["bad_epochs"] >= patience:
            state["stopped"] = "early_stopped"
        elif epoch + 1 >= epochs:
            state["stopped"] = "max_epochs"
        if rank == 0:
            save_state(state_dir, model, opt, state)
        best = f"{state['best_valid'][metric]:.4f}"
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{score:.4f}", best=f"{best}@{state['best_epoch']}")
        if log_lines and rank == 0:
            print(f"{desc}: epoch {epoch + 1}/{epochs}  loss {row['loss']:.4f}  valid {metric} {score:.4f}  best "
                  f"{best} @ {state['best_epoch'] + 1}  {seconds:.1f}s", file=sys.stderr, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if state["stopped"] == "early_stopped":
            break
    bar.close()
    distributed.barrier()  # every process leaves once rank 0 has written
    if state["best_valid"] is None:
        raise TandemError(f"no epoch was trained in {state_dir.parent}; raise --epochs")
    return state
