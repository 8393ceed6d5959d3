"""Does a refactor change behaviour? Run the same short pipeline on ML-100K with an older commit and with this
checkout, one thread each, and compare every number and every weight file.

    .venv/bin/python bench/same_numbers.py --old 2379c2e [--json docs/results/refactor_check.json]

The pipeline: ``train srm`` (SASRec, 4 epochs) → ``eval srm`` → ``train srm --model gru4rec`` (3 epochs, the stand-in
cloud) → ``train paramgen`` (2 epochs) → ``eval device`` (generated head, GRU4Rec top-100 as candidates, every fusion
rule and request policy). The old commit runs from a ``git worktree`` with this venv's packages; its CLI is
``python -m tandem`` before the top floor existed and ``python -m pipelines`` after.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    ["train", "srm", "--out", "{o}/sasrec", "--epochs", "4", "--patience", "4", "--threads", "1"],
    ["eval", "srm", "--checkpoint", "{o}/sasrec", "--json", "{o}/eval_srm.json"],
    ["train", "srm", "--model", "gru4rec", "--out", "{o}/gru4rec", "--epochs", "3", "--patience", "3",
     "--threads", "1"],
    ["train", "paramgen", "--srm", "{o}/sasrec", "--out", "{o}/paramgen", "--epochs", "2", "--threads", "1"],
    ["eval", "device", "--srm", "{o}/sasrec", "--paramgen", "{o}/paramgen", "--candidates", "srm:{o}/gru4rec",
     "--json", "{o}/eval_device.json"],
]
WEIGHTS = ["sasrec/model.safetensors", "gru4rec/model.safetensors", "paramgen/model.safetensors",
           "paramgen/codebook.safetensors"]


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, sub in enumerate(value) for k, v in flatten(sub, f"{prefix}[{i}]").items()}
    return {prefix: value}


def run_pipeline(tree: Path, out: Path, home: Path) -> None:
    module = "pipelines" if (tree / "pipelines" / "__main__.py").exists() else "tandem"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "TANDEM_HOME": str(home)}
    out.mkdir(parents=True)
    for step in STEPS:
        argv = [sys.executable, "-m", module, *(a.format(o=out) for a in step)]
        print(f"[{tree.name}] {' '.join(step[:2])} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)  # cwd first on sys.path
        if proc.returncode:
            sys.exit(f"bench/same_numbers.py: {' '.join(argv)} failed in {tree}:\n{proc.stderr[-3000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, metavar="REV", help="the commit to compare against")
    p.add_argument("--json", metavar="FILE", help="write the comparison as JSON")
    p.add_argument("--home", metavar="DIR", help="TANDEM_HOME for both runs (default: $TANDEM_HOME or ~/.cache/tandem)")
    args = p.parse_args()
    home = Path(args.home or os.environ.get("TANDEM_HOME", Path.home() / ".cache" / "tandem"))
    git = ["git", "-C", str(ROOT)]
    old_rev = subprocess.run([*git, "rev-parse", "--short", args.old], capture_output=True, text=True,
                             check=True).stdout.strip()
    new_rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
    dirty = bool(subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([*git, "worktree", "add", "--detach", "-q", str(tmp / "old"), old_rev], check=True)
        try:
            run_pipeline(tmp / "old", tmp / "out_old", home)
            run_pipeline(ROOT, tmp / "out_new", home)
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tmp / "old")], check=False)
        report = {"command": f"python bench/same_numbers.py --old {args.old}", "date": date.today().isoformat(),
                  "commit": new_rev + ("+uncommitted" if dirty else ""), "old_commit": old_rev,
                  "machine": f"{os.cpu_count()} CPUs, one thread per run", "files": {}}
        for name in ("eval_srm.json", "eval_device.json"):
            a = flatten(json.loads((tmp / "out_old" / name).read_text()))
            b = flatten(json.loads((tmp / "out_new" / name).read_text()))
            paths = {k for k in set(a) | set(b) if not k.startswith("/meta/candidates")}  # holds the run's folder
            differ = sorted(k for k in paths if a.get(k) != b.get(k))
            report["files"][name] = {"values": len(paths), "differ": differ}
        report["weights_identical"] = {w: filecmp.cmp(tmp / "out_old" / w, tmp / "out_new" / w, shallow=False)
                                       for w in WEIGHTS}
        new_srm = json.loads((tmp / "out_new" / "eval_srm.json").read_text())["metrics"]
        new_dev = json.loads((tmp / "out_new" / "eval_device.json").read_text())
        report["headline"] = {"sasrec_test_ndcg@10": new_srm["ndcg@10"],
                              "device_learned_fusion_ndcg@10": new_dev["fusion"]["learned"]["ndcg@10"]}
    same = all(not f["differ"] for f in report["files"].values()) and all(report["weights_identical"].values())
    report["same"] = same
    print(json.dumps(report, indent=2))
    if args.json:
        sys.path.insert(0, str(ROOT))
        from tandem.io import atomic_write_json

        atomic_write_json(Path(args.json), report)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
