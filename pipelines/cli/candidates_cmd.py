"""``tandem candidates``: the LLM's top-n lists for many users into the on-disk candidate cache, in this process or on
Ray Data (``--engine ray``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipelines.cli.common import add_parser, write_json
from tandem.errors import TandemError

SPLITS = {"test": "all but each user's last item: what `tandem serve` recommends from for a known user_id",
          "valid": "all but the last two items (the validation history the build calibrates on)",
          "full": "every item: the next, still unseen item (a nightly regeneration)"}


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The list-engine flags shared by `tandem candidates` and `tandem build`."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where missing lists are made: this process, or Ray Data actors (the [ray] extra)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="--engine ray: an existing cluster (auto, ray://host:10001); default: start a local one")
    p.add_argument("--actors", type=int, default=1, help="--engine ray: Ray Data actors, one model copy each")
    p.add_argument("--batch-size", type=int, default=64, help="histories per beam-search call and per cache shard")
    p.add_argument("--actor-threads", type=int, default=1, help="--engine ray: CPU threads per actor")


def engine_options(args: argparse.Namespace, backend: str = "transformers"):
    from pipelines.candidate_cache import EngineOptions

    if args.batch_size < 1:
        raise TandemError(f"--batch-size must be >= 1, got {args.batch_size}")
    return EngineOptions(args.engine, backend, args.ray_address, args.actors, args.batch_size, args.actor_threads)


def read_users(spec: str, n_users: int) -> list[int]:
    """``all``, or a file of dense user indices (one per line, blank lines and ``#`` comments skipped)."""
    if spec == "all":
        return list(range(n_users))
    path = Path(spec)
    if not path.is_file():
        raise TandemError(f"--users {spec!r} is neither 'all' nor a file; pass all, or a file of user indices, one "
                          f"per line")
    users = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.isdigit() or int(line) >= n_users:
            raise TandemError(f"--users {path}:{lineno}: {line!r} is not a user index in 0..{n_users - 1}; write one "
                              f"dense user index per line")
        users.append(int(line))
    if not users:
        raise TandemError(f"--users {path} lists no users; write one dense user index per line")
    return users


def _candidates(args: argparse.Namespace) -> int:
    import numpy as np

    from llm_cloud.generative.checkpoint import load_artifact
    from pipelines.candidate_cache import CandidateCache
    from tandem.data.options import DatasetOptions, load_dataset

    if args.n < 1:
        raise TandemError(f"--n must be >= 1, got {args.n}")
    opts = engine_options(args, args.backend)
    artifact = load_artifact(args.llm)
    ds = load_dataset(DatasetOptions(**artifact.meta["dataset"]))
    users = read_users(args.users, len(ds.sequences))
    cut = {"test": 1, "valid": 2, "full": 0}[args.split]
    histories = [np.asarray(ds.sequences[u][: len(ds.sequences[u]) - cut], dtype=np.int64) for u in users]
    short = [u for u, h in zip(users, histories) if len(h) == 0]
    if short:
        raise TandemError(f"user {short[0]} has no history for --split {args.split} ({len(short)} such users); use "
                          f"--split full, or leave them out of --users")
    cache = CandidateCache(args.out)
    t0 = time.perf_counter()
    cache.lists(opts.make(args.llm), histories, args.n, progress=None)
    seconds = time.perf_counter() - t0
    summary = {"users": len(users), "split": args.split, "n": args.n, "engine": args.engine, "actors": args.actors,
               "made": cache.misses, "reused": cache.hits, "seconds": round(seconds, 2),
               "lists_per_s": round(cache.misses / seconds, 3) if cache.misses else None, "cache": str(args.out)}
    print(json.dumps(summary))
    write_json(args.json, summary)
    return 0


def register(sub) -> None:
    p = add_parser(sub, "candidates", "make the LLM's top-n candidate lists for many users into an on-disk candidate "
                   "cache (sharded, atomic, resumable: a rerun makes only the missing lists), here or on Ray Data",
                   _candidates)
    p.add_argument("--llm", required=True, metavar="DIR", help="generative LLM checkpoint (a store's llm/ folder)")
    p.add_argument("--users", default="all", metavar="all|FILE",
                   help="every user of the checkpoint's dataset, or a file of dense user indices, one per line")
    p.add_argument("--split", choices=tuple(SPLITS), default="test",
                   help="which history per user: " + "; ".join(f"{k}: {v}" for k, v in SPLITS.items()))
    p.add_argument("--out", required=True, metavar="CACHE",
                   help="cache folder (a store's collab/candidates, or a new one)")
    p.add_argument("--n", type=int, default=100, help="list length (default 100)")
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers", help="LLM backend")
    add_engine_args(p)
    p.add_argument("--json", metavar="OUT", help="also write the summary line here")
