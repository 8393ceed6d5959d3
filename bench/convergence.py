"""Convergence of SRM training runs side by side: training loss and validation NDCG@10 per epoch, read from the
checkpoints' own epoch state (``state/trainer_state.json``), plotted on shared axes and written as JSON.

    .venv/bin/python bench/convergence.py --run default=runs/sasrec --run ffn0=runs/sasrec_ffn0 \\
        [--json docs/results/convergence.json] [--plot docs/results/convergence.png]

A run still training is read as it stands (its last finished epoch). Where every run has reached an epoch, the
validation NDCG@10 of each run at the last common epoch is reported too, so that runs stopped at different points are
compared at equal training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def history(folder: Path) -> dict:
    state = json.loads((folder / "state" / "trainer_state.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    return {"folder": str(folder), "model": config.get("model"), "model_config": config.get("model_config"),
            "train_config": config.get("train_config"), "dataset": config.get("dataset"),
            "epochs": [h["epoch"] for h in state["history"]], "loss": [h["loss"] for h in state["history"]],
            "valid_ndcg@10": [h.get("valid_ndcg@10") for h in state["history"]],
            "best_epoch": state["best_epoch"], "best_valid": state["best_valid"], "stopped": state["stopped"],
            "train_seconds": state["train_seconds"]}


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    for name, r in runs.items():
        a1.plot(r["epochs"], r["loss"], label=name)
        a2.plot(r["epochs"], r["valid_ndcg@10"], marker=".", label=name)
    a1.set_xlabel("epoch")
    a1.set_ylabel("train loss (CE)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("valid NDCG@10")
    a2.legend(fontsize=8)
    fig.tight_layout()
    sys.path.insert(0, str(ROOT))
    from tandem.io import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="NAME=DIR", help="a checkpoint folder, named")
    p.add_argument("--json", metavar="FILE", help="write the histories as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw loss and validation NDCG@10 per epoch")
    args = p.parse_args()
    runs = {}
    for spec in args.run:
        name, sep, folder = spec.partition("=")
        if not sep:
            p.error(f"--run {spec}: expected NAME=DIR")
        runs[name] = history(Path(folder))
    common = min(len(r["epochs"]) for r in runs.values())
    at_common = {name: r["valid_ndcg@10"][common - 1] for name, r in runs.items()} if common else {}
    for name, r in runs.items():
        print(f"{name:<12} epochs {len(r['epochs']):>3}  best valid NDCG@10 {r['best_valid']['ndcg@10']:.4f} "
              f"(epoch {r['best_epoch']})  at epoch {common - 1}: {at_common.get(name, float('nan')):.4f}  "
              f"{r['train_seconds'] / max(1, len(r['epochs'])):.0f} s/epoch")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    report = {"command": "python bench/convergence.py " + " ".join(f"--run {s}" for s in args.run),
              "date": date.today().isoformat(), "commit": commit, "common_epochs": common,
              "valid_ndcg@10_at_common_epoch": at_common, "runs": runs}
    if args.json:
        sys.path.insert(0, str(ROOT))
        from tandem.io import atomic_write_json

        atomic_write_json(Path(args.json), report)
    if args.plot:
        plot(runs, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
