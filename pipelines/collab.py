"""`tandem train collab`: LSC4Rec collaborative training (Lv et al. 2025, arXiv 2502.08667).

1. The cloud LLM beam-searches a top-``n_candidates`` list for the last ``prefixes_per_user`` training prefixes of
   every user, and for every validation history; lists go through :class:`~pipelines.candidate_cache.CandidateCache`
   (``out/candidates``), so a killed run resumes and a rerun with other fine-tuning settings reuses them.
2. The device SRM is fine-tuned to rank inside those lists (:mod:`srm_device.training.collab`); the epoch is chosen
   by validation NDCG@10 of reranking inside the LLM's validation lists (a target missing from a list is a miss).

Output folder::

    candidates/        the cached LLM lists (shared with `tandem build`'s thresholds stage)
    run.json           settings and input identities of the fine-tuning (state is discarded when they change)
    state/, best.safetensors   resumable fine-tuning state
    srm/               the collab-tuned SRM, a normal checkpoint folder (appears only when complete)
    report.json        timings, candidate recall, before/after validation metrics
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from eval.device import candidate_ranks
from eval.metrics import metrics_from_ranks
from eval.srm import make_validator
from pipelines.candidate_cache import CandidateCache, EngineOptions, file_digest, llm_identity
from srm_device.models import SequentialRecommender
from srm_device.scoring import candidate_logits, pad_histories, user_vectors
from srm_device.training import checkpoint as ckpt
from srm_device.training.checkpoint import load_srm_with_data
from srm_device.training.collab import CollabExamples, finetune
from srm_device.training.config import CollabConfig
from tandem.data.split import leave_one_out
from tandem.errors import TandemError
from tandem.io import atomic_directory, atomic_write_json

RESUMABLE = ("epochs", "patience", "threads")


def train_prefixes(train: list[np.ndarray], per_user: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The last ``per_user`` (history, next item) pairs of each training sequence, with non-empty histories."""
    hist, targets = [], []
    for s in train:
        for i in range(1, min(per_user, len(s) - 1) + 1):
            hist.append(s[:-i])
            targets.append(s[-i])
    return hist, np.asarray(targets, dtype=np.int64)


def rerank_metrics(model: SequentialRecommender, histories: list[np.ndarray], ids: np.ndarray,
                   targets: np.ndarray) -> dict[str, float]:
    """Metrics of reranking the LLM's lists by the SRM; a target not in its list is a miss."""
    scores = candidate_logits(model, user_vectors(model, histories), ids)  # (u, n)
    return metrics_from_ranks(candidate_ranks(scores, ids, targets))


def _brief(m: dict[str, float]) -> dict[str, float]:
    return {k: m[k] for k in ("ndcg@10", "hr@10", "mrr@10")}


def _load_inputs(llm_dir: str | Path, srm_dir: str | Path):
    from llm_cloud.backends import load_backend

    srm, meta, ds = load_srm_with_data(srm_dir)
    if not Path(llm_dir).is_dir():
        raise TandemError(f"LLM checkpoint folder {llm_dir} does not exist; pass the --out folder of "
                          f"`tandem llm sft`")
    backend = load_backend("transformers", Path(llm_dir))
    fix = "train the LLM and the SRM on the same dataset"
    if backend.artifact.n_items != ds.n_items:
        raise TandemError(f"LLM checkpoint {llm_dir} knows {backend.artifact.n_items} items but SRM {srm_dir} "
                          f"{ds.n_items}; {fix}")
    fp = backend.artifact.meta.get("data_fingerprint")
    if fp and fp != ds.fingerprint():
        raise TandemError(f"LLM checkpoint {llm_dir} was trained on other data (fingerprint {fp}) than SRM "
                          f"{srm_dir} ({ds.fingerprint()}); {fix}")
    return srm, meta, ds, backend


def _prepare_out(out: Path, run: dict, overwrite: bool) -> None:
    """Wipe ``out`` on ``overwrite``; discard stale fine-tuning state (never the candidate cache) when settings or
    inputs changed; record ``run``."""
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "run.json"

    def comparable(r: dict) -> dict:
        return {**r, "collab_config": {k: v for k, v in r["collab_config"].items() if k not in RESUMABLE}}

    if path.is_file():
        try:
            old = json.loads(path.read_text())
            same = comparable(old) == comparable(run)
        except (json.JSONDecodeError, KeyError):
            same = False
        if not same:  # fine-tuning is cheap; the cached lists stay (the cache checks its own LLM)
            shutil.rmtree(out / "state", ignore_errors=True)
            (out / "best.safetensors").unlink(missing_ok=True)
    atomic_write_json(path, run)


def train_collab(llm_dir: str | Path, srm_dir: str | Path, out: str | Path, cfg: CollabConfig,
                 overwrite: bool = False, progress: bool | None = None, engine: EngineOptions | None = None) -> dict:
    """Generate (or reuse) the LLM's lists, fine-tune the SRM inside them, write ``out/srm`` and ``out/report.json``;
    returns the report. ``engine``: where missing lists are made (default: here, with the loaded backend)."""
    cfg.validate()
    out = Path(out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    srm, meta, ds, backend = _load_inputs(llm_dir, srm_dir)
    run = {"collab_config": cfg.to_dict(), "llm": llm_identity(llm_dir),
           "srm": {"folder": str(srm_dir), "weights": file_digest(Path(srm_dir) / ckpt.WEIGHTS)}}
    _prepare_out(out, run, overwrite)
    split = leave_one_out(ds.sequences)
    n = cfg.n_candidates

    # 1. the LLM's lists: training prefixes, then validation histories
    cache = CandidateCache(out / "candidates")
    lists = (engine or EngineOptions()).make(llm_dir, backend)
    t0 = time.perf_counter()
    hist, targets = train_prefixes(split.train, cfg.prefixes_per_user)
    if not len(targets):
        raise TandemError(f"no training prefixes: every user of {ds.name!r} has fewer than 4 interactions; use a "
                          f"dataset with longer sequences")
    ids, _ = cache.lists(lists, hist, n, progress=progress)  # (m, n)
    valid = split.valid
    v_ids, _ = cache.lists(lists, valid.histories, n, progress=progress)  # (u, n)
    seconds_candidates = time.perf_counter() - t0

    # 2. fine-tune inside the lists
    seq, lengths = pad_histories(hist, srm.config.max_len)  # (m, t), (m,)
    examples = CollabExamples(seq, lengths, torch.from_numpy(targets), torch.from_numpy(ids))
    full_valid = make_validator(split, srm.config.max_len, bool(meta.get("mask_history", False)))
    before_full = _brief(full_valid(srm.eval()))

    def validate(model: SequentialRecommender) -> dict[str, float]:
        return rerank_metrics(model, valid.histories, v_ids, valid.targets)

    t1 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    result = finetune(srm, examples, validate, out, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                      full_ce_weight=cfg.full_ce_weight, seed=cfg.seed, patience=cfg.patience, progress=progress)
    seconds_finetune = time.perf_counter() - t1
    after_full = _brief(full_valid(srm))

    # 3. the checkpoint and the report
    with atomic_directory(out / "srm") as tmp:
        ckpt.save_weights(srm, tmp / ckpt.WEIGHTS)
        ckpt.write_config(tmp, {k: v for k, v in meta.items() if k != "format_version"} | {
            "collab": {"note": "LSC4Rec collab-tuned (arXiv 2502.08667): fine-tuned inside the LLM's candidate "
                               "lists by `tandem train collab`", "base_srm": str(srm_dir), "llm": str(llm_dir),
                       "collab_config": cfg.to_dict(), "best_epoch": result.best_epoch}})
    llm_order = np.tile(-np.arange(n, dtype=np.float64), (len(valid.targets), 1))  # (u, n) the LLM's own ranks
    report = {
        "seconds_candidates": round(seconds_candidates, 2), "seconds_finetune": round(seconds_finetune, 2),
        "n_examples": int(len(targets)), "n_valid_users": int(len(valid.targets)), "n_candidates": n,
        "train_recall@n": float((ids == targets[:, None]).any(1).mean()),
        "valid_recall@n": float((v_ids == valid.targets[:, None]).any(1).mean()),
        "cache": {"hits": cache.hits, "misses": cache.misses},
        "best_epoch": result.best_epoch, "kept_original": result.best_epoch < 0, "epochs_run": result.epochs_run,
        "stopped": result.stopped,
        "valid_in_list": {"llm": _brief(metrics_from_ranks(candidate_ranks(llm_order, v_ids, valid.targets))),
                          "srm": _brief(result.original_valid), "collab": _brief(result.best_valid)},
        "valid_full": {"srm": before_full, "collab": after_full},
        "history": result.history, "collab_config": cfg.to_dict(), "llm": str(llm_dir), "srm": str(srm_dir),
    }
    atomic_write_json(out / "report.json", report)
    return report
