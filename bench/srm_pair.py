"""Two SRM checkpoints on the same users: test NDCG@10 of each and the paired-bootstrap interval of the difference
(1,000 resamples of the users), so that a difference is claimed only when its interval excludes zero.

    .venv/bin/python bench/srm_pair.py A_DIR B_DIR [--split test] [--json FILE]

Both checkpoints must have been trained on the same data (same dataset, filters and tie order); the second is
evaluated on the first one's dataset and refused otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.bootstrap import ndcg_at, paired_bootstrap  # noqa: E402
from eval.evaluate import rank_targets  # noqa: E402
from srm_device.training.checkpoint import load_srm_with_data  # noqa: E402
from tandem.data.options import DatasetOptions  # noqa: E402
from tandem.data.split import get_case, leave_one_out  # noqa: E402
from tandem.io import atomic_write_json  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", metavar="A_DIR", help="the reference checkpoint")
    p.add_argument("b", metavar="B_DIR", help="the checkpoint compared with it (delta = B - A)")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    model_a, meta_a, ds = load_srm_with_data(args.a)
    model_b, meta_b, _ = load_srm_with_data(args.b, DatasetOptions(**meta_a["dataset"]))
    case = get_case(leave_one_out(ds.sequences), args.split)
    per_user = {}
    for name, model, meta in (("a", model_a, meta_a), ("b", model_b, meta_b)):
        model.eval()
        ranks = rank_targets(model.full_sort_scores, case, model.config.max_len, bool(meta.get("mask_history")))
        per_user[name] = ndcg_at(ranks, 10)
    boot = paired_bootstrap(per_user["a"], per_user["b"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    report = {"command": f"python bench/srm_pair.py {args.a} {args.b} --split {args.split}",
              "date": date.today().isoformat(), "commit": commit, "dataset": ds.name, "split": args.split,
              "users": int(len(case.targets)), "a": {"checkpoint": args.a, "model_config": meta_a["model_config"],
                                                     "ndcg@10": float(per_user["a"].mean())},
              "b": {"checkpoint": args.b, "model_config": meta_b["model_config"],
                    "ndcg@10": float(per_user["b"].mean())}, "b_minus_a": boot}
    print(json.dumps(report, indent=2))
    if args.json:
        atomic_write_json(Path(args.json), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
