"""How the tiny generative recommender spends a fixed training budget: learning-rate schedule and peak, bf16 mixed
precision, length-grouped batches and label smoothing, each against the current config in one run.

Every arm trains ``--epochs`` epochs (default 5: the build's LLM stage had 5 epochs of the ``current`` schedule)
from the same seed on ML-100K, one after the other on the same threads (``bench/sft_arms.py``). The arm to ship is
the best on **validation** NDCG@10 among those that take at most ``--time-slack`` more trainer seconds than the
current config; the test split then gives the paired-bootstrap interval (over users) of that arm against the current
one.

    python -m bench.sft_schedule [--epochs 5] [--threads 2] [--arms current,cosine_3e-3,...] \\
        [--work runs/sft_schedule] [--json docs/results/sft_schedule_ml100k.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.sft_arms import arm_parser, public, run_arms, selected_arms
from pipelines.cli.common import write_json

# The schedule sft_tiny.yaml had before this bench chose a new one: every arm states its settings against it, so
# the arms stay the same runs whatever the packaged config says now.
BEFORE = {"lr_scheduler": "linear", "learning_rate": 1e-3, "warmup_ratio": 0.05, "window_stride": 25,
          "fused_loss": True, "group_by_length": False, "bf16": False, "label_smoothing": 0.0}
CHANGES: dict[str, dict] = {
    "current": {},
    "cosine_1e-3": {"lr_scheduler": "cosine"},
    "cosine_3e-3": {"lr_scheduler": "cosine", "learning_rate": 3e-3},
    "cosine_3e-3_smooth0.1": {"lr_scheduler": "cosine", "learning_rate": 3e-3, "label_smoothing": 0.1},
    "cosine_3e-3_grouped": {"lr_scheduler": "cosine", "learning_rate": 3e-3, "group_by_length": True},
    "cosine_3e-3_bf16": {"lr_scheduler": "cosine", "learning_rate": 3e-3, "bf16": True},
    "cosine_5e-3": {"lr_scheduler": "cosine", "learning_rate": 5e-3},
    # bf16 and grouped batches make an epoch cheaper: spend the saving on 1.4x the epochs in about the same time
    "cosine_3e-3_bf16_grouped_x1.4": {"lr_scheduler": "cosine", "learning_rate": 3e-3, "bf16": True,
                                      "group_by_length": True, "epoch_factor": 1.4},
    # cheaper epochs: transformers' plain loss, and windows that do not overlap (stride 51 = max_items + 1)
    "cosine_3e-3_grouped_plain": {"lr_scheduler": "cosine", "learning_rate": 3e-3, "group_by_length": True,
                                  "fused_loss": False},
    **{f"cosine_3e-3_grouped_plain_stride51_x{f:g}": {
        "lr_scheduler": "cosine", "learning_rate": 3e-3, "group_by_length": True, "fused_loss": False,
        "window_stride": 51, "epoch_factor": f} for f in (1.6, 1.8, 2.0)},
}
ARMS: dict[str, dict] = {name: {**BEFORE, **change} for name, change in CHANGES.items()}


def main(argv: list[str] | None = None) -> int:
    from eval.bootstrap import format_interval, paired_bootstrap

    ap = arm_parser(__doc__, ARMS, "runs/sft_schedule", epochs=5)
    ap.add_argument("--time-slack", type=float, default=0.05, help="an arm may take this fraction more trainer "
                    "seconds than `current` and still be chosen (default 0.05)")
    args = ap.parse_args(argv)
    arms = selected_arms(ap, args, ARMS, "current")
    results = run_arms(arms, Path(args.work), args.threads)

    base = results["current"]
    budget = base["train_seconds"] * (1 + args.time_slack)
    eligible = [n for n, r in results.items() if r["train_seconds"] <= budget]
    chosen = max(eligible, key=lambda n: results[n]["valid_ndcg@10"])
    print(f"\n{'arm':<24} {'train s':>8} {'s/epoch':>8} {'peak MiB':>9} {'loss':>7} {'valid':>7} {'test':>7}")
    for name, r in results.items():
        mark = " <- chosen on validation" if name == chosen else ("" if name in eligible else " (over time)")
        print(f"{name:<24} {r['train_seconds']:>8.0f} {r['train_seconds'] / r['config']['epochs']:>8.1f} "
              f"{r['process_peak_rss_mib']:>9.0f} {r['train_loss']:>7.4f} {r['valid_ndcg@10']:>7.4f} "
              f"{r['test_ndcg@10']:>7.4f}{mark}")
    out = {"epochs": args.epochs, "threads": args.threads, "users": len(base["_test"]), "arms": public(results),
           "chosen": chosen, "time_slack": args.time_slack}
    if chosen != "current":
        for split in ("valid", "test"):
            ci = paired_bootstrap(base[f"_{split}"], results[chosen][f"_{split}"])
            out[f"chosen_minus_current_{split}"] = ci
            print(f"{chosen} − current, {split} NDCG@10: {format_interval(ci)}")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
