"""Shared by the training benches (``bench/sft_schedule.py``, ``bench/token_pruning.py``): train variants ("arms") of
the tiny generative recommender one after the other, each in its own process with the same threads and seed, then
score every checkpoint on the validation and test users of ML-100K (leave-one-out) with the constrained beam search.

An arm is a name and a mapping of overrides on ``pipelines/configs/sft_tiny.yaml``. Per arm the bench keeps the
trainer's own seconds (data preparation excluded), the training process's CPU seconds and peak resident memory
(``wait4``), the final loss, and per-user NDCG@10 on both splits, so that a choice made on validation can be checked
on test with the paired bootstrap (:mod:`eval.bootstrap`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from tandem.io import atomic_output, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "pipelines" / "configs" / "sft_tiny.yaml"


def arm_config(overrides: dict, out: Path, base: Path = BASE) -> dict:
    """The base YAML with ``overrides`` applied (nested mappings such as ``model`` are merged one level deep)."""
    cfg = yaml.safe_load(base.read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    cfg["output_dir"] = str(out)
    return cfg


def run_child(cmd: list[str], threads: int) -> dict:
    """Run ``python cmd`` with ``threads`` torch threads; its wall and CPU seconds and peak RSS (MiB).

    Exits with the child's stderr tail when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code:
            err.seek(0)
            sys.exit(f"`{' '.join(cmd)}` failed ({code}):\n{err.read()[-3000:]}")
    return {"wall_seconds": time.perf_counter() - start, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def same_run(a: dict | None, b: dict) -> bool:
    """Whether two YAML mappings are the same run once every default is filled in."""
    from llm_cloud.train.sft_config import SFTRunConfig

    return a is not None and SFTRunConfig(**a).model_dump() == SFTRunConfig(**b).model_dump()


def train_arm(name: str, overrides: dict, work: Path, threads: int) -> dict:
    """Train one arm into ``work/name`` (reused when a finished checkpoint with the same config is there)."""
    out = work / name
    cfg = arm_config(overrides, out)
    path = work / f"{name}.yaml"
    done = work / f"{name}.train.json"
    earlier = json.loads(done.read_text()) if done.is_file() else None
    if earlier and same_run(earlier.get("config"), cfg) and (out / "tandem_llm.json").is_file():
        print(f"[{name}] reusing {out}", file=sys.stderr, flush=True)
        return earlier
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"[{name}] training {overrides} ...", file=sys.stderr, flush=True)
    proc = run_child(["-m", "llm_cloud.train.sft", "--config", str(path), "--out", str(out), "--overwrite"], threads)
    meta = json.loads((out / "tandem_llm.json").read_text())
    record = {"config": cfg, "overrides": overrides, "train_seconds": meta["train_seconds"],
              "train_loss": meta["train_loss"], "train_steps": meta["train_steps"], **{
                  f"process_{k}": v for k, v in proc.items()}}
    atomic_write_json(done, record)  # a killed bench leaves no half-written record to reuse
    print(f"[{name}] {meta['train_seconds']:.0f} s, loss {meta['train_loss']:.4f}, peak RSS "
          f"{proc['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    return record


def ndcg_by_split(folder: Path, threads: int, n: int = 100) -> dict[str, np.ndarray]:
    """Per-user NDCG@10 (u,) of the checkpoint's top-``n`` lists on the validation and the test users."""
    import torch

    from eval.bootstrap import ndcg_at
    from eval.llm import ranks_from_lists
    from llm_cloud.backends import load_backend
    from tandem.data.options import DatasetOptions, load_dataset
    from tandem.data.split import get_case, leave_one_out

    torch.set_num_threads(threads)
    backend = load_backend("transformers", folder, batch_size=32, progress=False)
    split = leave_one_out(load_dataset(DatasetOptions(**backend.artifact.meta["dataset"])).sequences)
    out = {}
    for name in ("valid", "test"):
        case = get_case(split, name)
        lists = backend.beam_candidates(case.histories, n=n)
        out[name] = ndcg_at(ranks_from_lists([c.items for c in lists], case.targets), 10)  # (u,)
    backend.close()
    return out


def run_arms(arms: dict[str, dict], work: Path, threads: int) -> dict[str, dict]:
    """Train every arm, then score each; ``{name: record}`` with ``valid_ndcg@10``/``test_ndcg@10`` means and the
    per-user arrays under ``_valid``/``_test`` (dropped before JSON)."""
    work.mkdir(parents=True, exist_ok=True)
    results = {name: train_arm(name, over, work, threads) for name, over in arms.items()}
    for name, record in results.items():
        cache = work / f"{name}.scores.npz"  # written after the checkpoint, so it is this checkpoint's
        if cache.is_file() and cache.stat().st_mtime > (work / name / "tandem_llm.json").stat().st_mtime:
            scores = dict(np.load(cache))
        else:
            scores = ndcg_by_split(work / name, threads)
            with atomic_output(cache) as tmp, open(tmp, "wb") as f:
                np.savez(f, **scores)
        record["_valid"], record["_test"] = scores["valid"], scores["test"]
        record["valid_ndcg@10"], record["test_ndcg@10"] = float(scores["valid"].mean()), float(scores["test"].mean())
        print(f"[{name}] valid NDCG@10 {record['valid_ndcg@10']:.4f}, test {record['test_ndcg@10']:.4f}",
              file=sys.stderr, flush=True)
    return results


def public(results: dict[str, dict]) -> dict[str, dict]:
    """The records without their per-user arrays (for JSON)."""
    return {name: {k: v for k, v in r.items() if not k.startswith("_")} for name, r in results.items()}


def arm_parser(doc: str, arms: dict[str, dict], work: str, epochs: float) -> argparse.ArgumentParser:
    """The options both benches share: --epochs (default ``epochs``), --threads, --arms, --work, --json."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=epochs, help=f"epochs of every arm (default {epochs:g})")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of training and scoring (default 2)")
    ap.add_argument("--arms", default=",".join(arms), help=f"comma-separated arms (default all: {', '.join(arms)})")
    ap.add_argument("--work", default=work, metavar="DIR", help="configs and checkpoints (finished arms with the "
                    "same config are reused)")
    ap.add_argument("--json", metavar="OUT", help="write the arms and the comparison here")
    return ap


def selected_arms(ap: argparse.ArgumentParser, args: argparse.Namespace, arms: dict[str, dict],
                  baseline: str) -> dict[str, dict]:
    """The arms named by --arms (which must include ``baseline``), each with its epochs: --epochs times the arm's
    ``epoch_factor`` (default 1)."""
    names = [a for a in args.arms.split(",") if a]
    if baseline not in names or any(a not in arms for a in names):
        ap.error(f"--arms must name `{baseline}` and known arms ({', '.join(arms)}); got {args.arms!r}")
    out = {}
    for name in names:
        over = dict(arms[name])
        over["epochs"] = round(args.epochs * over.pop("epoch_factor", 1.0), 3)
        out[name] = over
    return out

