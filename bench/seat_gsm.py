"""Cas-SEAT on real data at a CPU-feasible size (arXiv 2501.05662): gsm_symbolic (reasoning-gym), SmolLM2-135M-Instruct.

Steps, each through the library that ``tandem align`` runs (resumable, outputs under ``--out-dir``):

1. ``synthesize``: ``--train`` problems (seed 1), source-filtered, the local teacher's cascade per problem
   (``--samples`` CoT samples, then the evaluation prompt); time per problem.
2. ``filter``: labelled-data filtering; counts per stage of both levels.
3. the base student on ``--eval`` held-out problems (seed 2, questions seen in training dropped):
   answer accuracy, self-evaluation accuracy, forced-verdict AUROC (``alignment.evaluate``).
4. when the filtered sets can supply ``--min-train`` examples at ``--cot-ratio``: SFT (LoRA) and the same
   evaluation of the trained student. Otherwise the report says how many examples survived and stops there.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.seat_gsm [--train 16 --eval 32] [--out-dir runs/seat_gsm]

``--teacher URL --teacher-model NAME`` uses an OpenAI-compatible endpoint (e.g. ``vllm serve`` of a stronger model)
instead of the local SmolLM2.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from alignment.seat.config import FilterConfig, SeatSFTConfig, SynthConfig
from alignment.seat.filter import run_filter
from alignment.seat.synthesize import run_synthesize
from bench.gym_tasks import held_out


def evaluate(model_dir: Path, adapter: Path | None, problems: list[dict], max_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.evaluate import evaluate_student

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    t0 = time.perf_counter()
    res = evaluate_student(model, tok, problems, max_tokens=max_tokens, progress=True)
    res["seconds"] = time.perf_counter() - t0
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=Path("runs/seat_gsm"))
    p.add_argument("--train", type=int, default=16, help="source problems for synthesis (default %(default)s)")
    p.add_argument("--eval", type=int, default=32, help="held-out problems (default %(default)s)")
    p.add_argument("--samples", type=int, default=3, help="teacher CoT samples per problem (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per generation (default %(default)s)")
    p.add_argument("--teacher", default="local", help="'local' or an OpenAI-compatible base URL")
    p.add_argument("--teacher-model", default=None)
    p.add_argument("--cot-ratio", type=float, default=0.5)
    p.add_argument("--min-train", type=int, default=8, help="least mixed examples worth an SFT run")
    args = p.parse_args()
    torch.set_num_threads(1)
    from llm_common.smollm import base_model_dir

    base = base_model_dir()
    out = args.out_dir
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    synth = SynthConfig(out=str(out / "synth"), gym_size=args.train, samples=args.samples,
                        max_tokens=args.max_tokens, teacher=args.teacher, teacher_model=args.teacher_model)
    report["synthesize"] = run_synthesize(synth)
    report["filter"] = run_filter(FilterConfig(records=synth.out))
    print(json.dumps({k: report[k] for k in ("synthesize", "filter")}, indent=2), flush=True)
    problems = held_out("gsm_symbolic", args.eval, [(synth.gym_seed, args.train)], seed=synth.gym_seed + 1)
    base_res = evaluate(base, None, problems, args.max_tokens + 64)
    report["base"] = {k: v for k, v in base_res.items() if k != "rows"}
    print("base:", json.dumps(report["base"]), flush=True)
    f = report["filter"]
    n_cot, n_se = f["cot_examples"], f["selfeval_examples"]
    feasible = min(n_cot / args.cot_ratio if args.cot_ratio else float("inf"),
                   n_se / (1 - args.cot_ratio) if args.cot_ratio < 1 else float("inf"))
    if feasible >= args.min_train:
        sft = SeatSFTConfig(data=synth.out, out=str(out / "sft"), cot_ratio=args.cot_ratio, epochs=3)
        from alignment.seat.sft import run_sft

        report["sft"] = run_sft(sft)
        trained = evaluate(base, Path(sft.out) / "final", problems, args.max_tokens + 64)
        report["cas_seat"] = {k: v for k, v in trained.items() if k != "rows"}
        print("cas-seat:", json.dumps(report["cas_seat"]), flush=True)
    else:
        report["sft"] = (f"skipped: {n_cot} CoT and {n_se} self-evaluation examples survived filtering, fewer than "
                         f"--min-train {args.min_train} at cot_ratio {args.cot_ratio}")
        print(report["sft"], flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "base_rows.json").write_text(json.dumps(base_res["rows"], indent=1) + "\n")
    print(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    main()
