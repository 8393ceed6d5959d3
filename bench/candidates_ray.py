"""Batch candidate generation on Ray Data against the local engine, side by side in one run: the first ``--users``
test histories and their shorter prefixes (``--prefixes`` lists per user) made into top-``n`` lists by the engines of
``tandem candidates``, each into an empty cache:

- ``local``: the backend's batched beam search in this process, ``--threads`` torch threads;
- ``ray-1``, ``ray-2``: one and two Ray Data actors of one thread each, on a local Ray cluster started once before
  the timings (its start is not timed; each job's actor start and model load are).

It prints lists/s for each (whole job, and after the first chunk arrives, which leaves out the actors' start), the
scaling ratio ray-2 / ray-1, and checks that every engine made the same lists.

    python -m bench.candidates_ray --json docs/results/candidates_ray.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.llm_backends import load_histories


class FirstChunk:
    """A list engine that notes when its first chunk arrives (the actors' start and model load, for Ray)."""

    def __init__(self, engine) -> None:
        self.engine, self.folder, self.first = engine, engine.folder, None

    def generate(self, histories, n):
        for chunk in self.engine.generate(histories, n):
            if self.first is None:
                self.first = (time.perf_counter(), len(chunk[0]))
            yield chunk


def timed(engine, histories, n: int, folder: Path) -> tuple[dict, np.ndarray]:
    from pipelines.candidate_cache import CandidateCache

    shutil.rmtree(folder, ignore_errors=True)
    engine = FirstChunk(engine)
    t0 = time.perf_counter()
    ids, _ = CandidateCache(folder).lists(engine, histories, n, progress=False)  # (u, n)
    t1 = time.perf_counter()
    first_at, first_rows = engine.first
    return {"seconds": round(t1 - t0, 2), "lists_per_s": round(len(histories) / (t1 - t0), 2),
            "first_chunk_s": round(first_at - t0, 2),
            "after_first_lists_per_s": round((len(histories) - first_rows) / max(t1 - first_at, 1e-9), 2)}, ids


def with_prefixes(histories: list[np.ndarray], k: int) -> list[np.ndarray]:
    """Each history and its ``k - 1`` longest proper prefixes (at least one item each): a nightly job's volume."""
    return [h[: len(h) - d] for h in histories for d in range(k) if len(h) - d >= 1]


def main() -> None:
    from pipelines.candidate_cache import EngineOptions
    from pipelines.ray_candidates import connect
    from tandem.artifacts import default_store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default=str(default_store() / "llm"), help="LLM checkpoint (default: the default store's)")
    ap.add_argument("--users", type=int, default=943, help="first N ML-100K test histories (default: all 943)")
    ap.add_argument("--prefixes", type=int, default=5,
                    help="lists per user: its history and shorter prefixes (default 5)")
    ap.add_argument("--n", type=int, default=100, help="list length")
    ap.add_argument("--batch-size", type=int, default=32, help="histories per beam-search call")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the local engine")
    ap.add_argument("--json", metavar="OUT", help="write the results here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from llm_cloud.generative.checkpoint import load_artifact

    histories = with_prefixes(load_histories(load_artifact(args.llm), args.users), args.prefixes)
    connect(None, num_cpus=2)
    arms = {"local": EngineOptions("local", batch_size=args.batch_size),
            "ray-1": EngineOptions("ray", actors=1, batch_size=args.batch_size),
            "ray-2": EngineOptions("ray", actors=2, batch_size=args.batch_size)}
    out: dict = {"users": args.users, "lists": len(histories), "n": args.n, "batch_size": args.batch_size,
                 "local_threads": args.threads}
    lists = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in arms.items():
            out[name], lists[name] = timed(opts.make(args.llm), histories, args.n, Path(tmp) / name)
            print(f"{name:<6} {json.dumps(out[name])}", flush=True)
    out["same_lists"] = {name: float(np.mean((ids == lists["local"]).all(1))) for name, ids in lists.items()}
    out["scaling_ray2_over_ray1"] = round(out["ray-2"]["lists_per_s"] / out["ray-1"]["lists_per_s"], 3)
    out["ray2_over_local"] = round(out["ray-2"]["lists_per_s"] / out["local"]["lists_per_s"], 3)
    out["scaling_after_first_chunk"] = round(out["ray-2"]["after_first_lists_per_s"]
                                             / out["ray-1"]["after_first_lists_per_s"], 3)
    print(f"scaling 2 actors / 1 actor: {out['scaling_ray2_over_ray1']:.2f}x (after the first chunk "
          f"{out['scaling_after_first_chunk']:.2f}x); 2 actors / local: "
          f"{out['ray2_over_local']:.2f}x; same lists as local: {out['same_lists']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
