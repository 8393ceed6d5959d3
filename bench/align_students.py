"""Held-out reasoning-gym table for the self-evaluation students (issue 8): base, Cas-SEAT-format SFT, AdaPO, GRPO.

Each model answers the same ``--eval`` held-out problems (seed 2, with every question of the training seeds dropped)
through :func:`alignment.evaluate.evaluate_student`: answer accuracy, final accuracy, malformed rate, self-evaluation
accuracy of well-formed outputs, and the forced-verdict accuracy and AUROC.

The defaults read the models ``bench/adapo_gsm.py`` wrote: ``warm_merged`` (the LoRA SFT on Cas-SEAT-format targets
derived from reference solutions, merged), ``adapo/final`` and ``baseline/final``. The base model is SmolLM2-135M-
Instruct.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.align_students [--eval 32] [--runs runs/adapo_gsm]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.gym_tasks import TASKS, held_out
from bench.seat_gsm import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/adapo_gsm"), help="bench/adapo_gsm.py's --out-dir")
    p.add_argument("--task", choices=list(TASKS), default="gsm_symbolic",
                   help="reasoning-gym task (default %(default)s)")
    p.add_argument("--eval-seed", type=int, default=2, help="held-out seed (default %(default)s); reasoning-gym "
                   "seeds item k with seed + k, so for small tasks pick one far from the training seeds 1 and 3")
    p.add_argument("--eval", type=int, default=32, help="held-out problems (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=320, help="tokens per answer (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="report path (default RUNS/students.json)")
    args = p.parse_args()
    torch.set_num_threads(1)
    from llm_common.smollm import base_model_dir

    models = {"base": base_model_dir(), "cas_seat_sft": args.runs / "warm_merged",
              "adapo": args.runs / "adapo" / "final", "grpo_baseline": args.runs / "baseline" / "final"}
    missing = [f"{k}={v}" for k, v in models.items() if not (Path(v) / "config.json").is_file()]
    if missing:
        raise SystemExit(f"models not found: {', '.join(missing)}; run bench/adapo_gsm.py first")
    held = held_out(args.task, args.eval, train=[(1, 64), (3, 32)], seed=args.eval_seed)
    out = args.out or args.runs / "students.json"
    report: dict = json.loads(out.read_text()) if out.is_file() else {}
    report["problems"], report["task"] = len(held), args.task
    for name, path in models.items():
        if name in report:
            continue  # resumable: one model at a time
        t0 = time.perf_counter()
        res = evaluate(Path(path), None, held, args.max_tokens)
        report[name] = {k: v for k, v in res.items() if k != "rows"} | {"seconds": time.perf_counter() - t0}
        print(name, json.dumps(report[name]), flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out)
    print(f"report: {out}")


if __name__ == "__main__":
    main()
