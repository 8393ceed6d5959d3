"""Start-up time of the ``tandem`` command: whole-process wall seconds of ``--help`` for the top level and a few
commands, side by side with ``python -c "import torch"`` as the yardstick (what every call paid before the parser
stopped importing the tiers).

    .venv/bin/python bench/cli_startup.py [--runs 10] [--old REV] [--json docs/results/cli_startup.json]

``--old REV`` adds ``python -m tandem --help`` (``python -m pipelines`` where that exists) run from a ``git worktree``
of an older commit, to compare against the same figure now.

Runs alternate between the commands (A B C ... A B C ...) so that a slow spell of the machine hits all of them; the
median of ``--runs`` is reported, with min and max.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "tandem --help": ["--help"],
    "tandem serve --help": ["serve", "--help"],
    "tandem train srm --help": ["train", "srm", "--help"],
    "tandem eval device --help": ["eval", "device", "--help"],
    "tandem llm sft --help": ["llm", "sft", "--help"],
}


def wall(cmd: list[str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=cwd,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="timed runs per command (default: 10), after one warm-up")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    p.add_argument("--old", metavar="REV", help="also time `--help` of this older commit (from a git worktree)")
    args = p.parse_args()
    if args.old:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "old"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.old],
                           check=True)
            try:
                return measure(args, tree)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return measure(args, None)


def measure(args: argparse.Namespace, old_tree: Path | None) -> int:
    tandem = str(Path(sys.executable).with_name("tandem"))
    cmds = {name: [tandem, *argv] for name, argv in COMMANDS.items()}
    cmds["python -c 'import torch'"] = [sys.executable, "-c", "import torch"]
    cwd = dict.fromkeys(cmds, ROOT)
    module = "pipelines" if (ROOT / "pipelines" / "__main__.py").exists() else "tandem"
    cmds[f"python -m {module} --help"] = [sys.executable, "-m", module, "--help"]
    cwd[f"python -m {module} --help"] = ROOT
    if old_tree is not None:
        old_module = "pipelines" if (old_tree / "pipelines" / "__main__.py").exists() else "tandem"
        name = f"python -m {old_module} --help @ {args.old}"
        cmds[name], cwd[name] = [sys.executable, "-m", old_module, "--help"], old_tree  # cwd first on sys.path
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for name, cmd in cmds.items():
        wall(cmd, cwd[name])  # warm-up: file cache, .pyc
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            times[name].append(wall(cmd, cwd[name]))
    torch_median = statistics.median(times["python -c 'import torch'"])
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                   "ratio_to_import_torch": statistics.median(t) / torch_median} for name, t in times.items()}
    print(f"{'command':<44}{'median s':>10}{'min':>8}{'max':>8}{'/ import torch':>16}")
    for name, r in rows.items():
        print(f"{name:<44}{r['median_s']:>10.3f}{r['min_s']:>8.3f}{r['max_s']:>8.3f}{r['ratio_to_import_torch']:>16.3f}")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        command = f"python bench/cli_startup.py --runs {args.runs}" + (f" --old {args.old}" if args.old else "")
        out = {"command": command, "date": date.today().isoformat(),
               "commit": commit, "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
               f"{platform.python_version()}", "runs": args.runs, "results": rows}
        sys.path.insert(0, str(ROOT))
        from tandem.io import atomic_write_json

        atomic_write_json(Path(args.json), out)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
