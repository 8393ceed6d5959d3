"""Token pruning while training the tiny generative recommender: unpruned, RASTP (arXiv 2511.16943, with and without
a warm-up) and STAMP (arXiv 2604.05329: its auxiliary prediction alone, and with semantic adaptive pruning), in one
run: trainer seconds, peak memory of the training process, and NDCG@10 on validation and test.

Every arm trains ``--epochs`` epochs of ``pipelines/configs/sft_tiny.yaml`` from the same seed on ML-100K, one after
the other on the same threads (``bench/sft_arms.py``). The target: an arm that saves >= 20% of the unpruned trainer
seconds at <= 2% relative loss of test NDCG@10; the paired bootstrap over users says whether a difference is noise.

    python -m bench.token_pruning [--epochs 5] [--threads 2] [--arms unpruned,rastp,...] \\
        [--work runs/token_pruning] [--json docs/results/token_pruning_ml100k.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.sft_arms import arm_parser, public, run_arms, selected_arms
from pipelines.cli.common import write_json

TIME_TARGET, NDCG_TARGET = 20.0, -2.0  # % trainer time saved at least, % test NDCG@10 change at least
ARMS: dict[str, dict] = {
    "unpruned": {},
    "rastp_keep0.3": {"rastp": {"layer": 1, "keep": 0.3}},
    "rastp_keep0.3_warmup0.3": {"rastp": {"layer": 1, "keep": 0.3, "warmup": 0.3}},
    "rastp_keep0.2_warmup0.3": {"rastp": {"layer": 1, "keep": 0.2, "warmup": 0.3}},
    "stamp_map_only": {"stamp": {"keep": 1.0, "steps": 1, "weight": 0.5}},
    "stamp_keep0.3": {"stamp": {"layer": 1, "keep": 0.3, "steps": 1, "weight": 0.5}},
    "stamp_keep0.3_warmup0.3": {"stamp": {"layer": 1, "keep": 0.3, "steps": 1, "weight": 0.5, "warmup": 0.3}},
}


def main(argv: list[str] | None = None) -> int:
    from eval.bootstrap import format_interval, paired_bootstrap

    ap = arm_parser(__doc__, ARMS, "runs/token_pruning", epochs=5)
    args = ap.parse_args(argv)
    results = run_arms(selected_arms(ap, args, ARMS, "unpruned"), Path(args.work), args.threads)

    base = results["unpruned"]
    out: dict = {"epochs": args.epochs, "threads": args.threads, "users": len(base["_test"]),
                 "target": {"time_saved_%": TIME_TARGET, "test_ndcg@10_change_%": NDCG_TARGET},
                 "arms": public(results), "comparison": {}}
    print(f"\n{'arm':<26} {'train s':>8} {'saved':>7} {'peak MiB':>9} {'valid':>7} {'test':>7} {'test Δ%':>8}  "
          f"test − unpruned (95% paired interval)")
    for name, r in results.items():
        saved = 100.0 * (1 - r["train_seconds"] / base["train_seconds"])
        change = 100.0 * (r["test_ndcg@10"] / base["test_ndcg@10"] - 1)
        ci = paired_bootstrap(base["_test"], r["_test"])
        met = bool(saved >= TIME_TARGET and change >= NDCG_TARGET)
        if name != "unpruned":
            out["comparison"][name] = {"time_saved_%": saved, "test_ndcg@10_change_%": change,
                                       "test_minus_unpruned": ci, "target_met": met}
        print(f"{name:<26} {r['train_seconds']:>8.0f} {saved:>+6.1f}% {r['process_peak_rss_mib']:>9.0f} "
              f"{r['valid_ndcg@10']:>7.4f} {r['test_ndcg@10']:>7.4f} {change:>+7.1f}%  "
              f"{format_interval(ci) if name != 'unpruned' else ''}{'  target met' if met else ''}")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
