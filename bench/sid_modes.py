"""Semantic-ID modes side by side: generative-recommender checkpoints trained with the same config on different item
codes (plain RQ-KMeans ``rq`` against CoFiRec's coarse-to-fine ``cofi``, arXiv 2511.22707), evaluated in one run.

For each checkpoint and split (valid, test): NDCG@10 and HR@10 of its top-``n`` lists (the tensorised trie beam
search), and the accuracy per level, which checks the coarse-to-fine claim: for level l, the share of users whose
top-1 item has the target's first l codes, and the share whose top 10 hold an item with that prefix. Then the paired
bootstrap over users of NDCG@10, each other checkpoint against the first.

    python -m bench.sid_modes --llm rq=runs/cofi_exp/llm_rq --llm cofi=runs/cofi_exp/llm_cofi \\
        --json docs/results/sid_modes_ml100k.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def prefix_hits(codes: np.ndarray, lists: np.ndarray, targets: np.ndarray, levels: int, k: int) -> list[float]:
    """Per level l = 1..levels: share of users with an item among the top ``k`` of ``lists`` (u, n) whose first l
    codes equal the target's; ``codes`` (N+1, L+1) by item id."""
    top = codes[lists[:, :k]][:, :, :levels]  # (u, k, L)
    want = codes[targets][:, None, :levels]  # (u, 1, L)
    same = np.cumprod(top == want, axis=2).astype(bool)  # (u, k, L): first l levels all equal
    return [float(same[:, :, lvl].any(axis=1).mean()) for lvl in range(levels)]


def evaluate(folder: str, n: int, batch_size: int, max_users: int | None = None) -> dict:
    from eval.bootstrap import ndcg_at
    from eval.llm import ranks_from_lists
    from eval.metrics import metrics_from_ranks
    from llm_cloud.backends import load_backend
    from tandem.data.options import DatasetOptions, load_dataset
    from tandem.data.split import get_case, leave_one_out

    backend = load_backend("transformers", folder, batch_size=batch_size, progress=False)
    art = backend.artifact
    split = leave_one_out(load_dataset(DatasetOptions(**art.meta["dataset"])).sequences)
    levels = art.codes.shape[1] - 1  # the semantic levels, without the trailing one
    out = {"levels": levels, "sids": art.meta.get("sids")}
    for name in ("valid", "test"):
        case = get_case(split, name)
        if max_users:
            case = type(case)(case.users[:max_users], case.histories[:max_users], case.targets[:max_users])
        t0 = time.perf_counter()
        cands = backend.beam_candidates(case.histories, n=n)
        seconds = time.perf_counter() - t0
        lists = np.stack([np.pad(c.items, (0, n - len(c.items))) for c in cands]).astype(np.int64)  # (u, n)
        ranks = ranks_from_lists([c.items for c in cands], case.targets)  # (u,)
        m = metrics_from_ranks(ranks)
        out[name] = {"ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"], "search_seconds": round(seconds, 1),
                     "top1_prefix_accuracy": prefix_hits(art.codes, lists, case.targets, levels, 1),
                     "top10_prefix_hit": prefix_hits(art.codes, lists, case.targets, levels, 10),
                     "per_user_ndcg@10": ndcg_at(ranks, 10).tolist()}
    backend.close()
    return out


def main() -> None:
    from eval.bootstrap import format_interval, paired_bootstrap
    from pipelines.cli.common import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", action="append", required=True, metavar="NAME=DIR",
                    help="a checkpoint (repeatable); the first is the baseline of the paired intervals")
    ap.add_argument("--n", type=int, default=100, help="list length (default 100)")
    ap.add_argument("--batch-size", type=int, default=32, help="users per beam-search call")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--max-users", type=int, help="first N users of each split (a quick check; default all)")
    ap.add_argument("--json", metavar="OUT", help="write the results here (per-user scores left out)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    runs = {name: evaluate(folder, args.n, args.batch_size, args.max_users)
            for name, folder in (spec.split("=", 1) for spec in args.llm)}
    names = list(runs)
    out: dict = {"n": args.n, "checkpoints": dict(spec.split("=", 1) for spec in args.llm)}
    for name, r in runs.items():
        print(f"{name}: levels {r['levels']}")
        for split in ("valid", "test"):
            s = r[split]
            print(f"  {split:<5} NDCG@10 {s['ndcg@10']:.4f}  HR@10 {s['hr@10']:.4f}  top-1 prefix accuracy by level "
                  f"{[round(v, 3) for v in s['top1_prefix_accuracy']]}  top-10 prefix hit "
                  f"{[round(v, 3) for v in s['top10_prefix_hit']]}")
        out[name] = {k: ({kk: vv for kk, vv in v.items() if kk != "per_user_ndcg@10"} if isinstance(v, dict) else v)
                     for k, v in r.items()}
    base = names[0]
    for name in names[1:]:
        for split in ("valid", "test"):
            ci = paired_bootstrap(np.array(runs[base][split]["per_user_ndcg@10"]),
                                  np.array(runs[name][split]["per_user_ndcg@10"]))
            out.setdefault("paired_ndcg@10", {}).setdefault(f"{name}-{base}", {})[split] = ci
            print(f"{name} - {base}, {split} NDCG@10: {format_interval(ci)}")
    write_json(args.json, out)


if __name__ == "__main__":
    main()
