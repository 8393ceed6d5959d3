"""AdaPO against a fixed-reward, fixed-β GRPO baseline on gsm_symbolic with SmolLM2-135M-Instruct, at a CPU size
(arXiv 2508.09155; our reward and KL designs in ``alignment/adapo/``).

The base 135M model never writes the self-evaluation block, so every rollout would be malformed (reward −1 for all,
zero GRPO advantage). A short warm start teaches the format first: LoRA SFT (``alignment.seat.sft``) on
self-evaluating targets derived from reasoning-gym's reference solutions — *Accept* targets are the reference chain of
thought and its answer; *Refine* targets are the same chain with its final answer perturbed, then a Refine block
that recomputes it and the right answer. This is a data-derived stand-in for a strong teacher (none runs on this
CPU). The merged warm-start model is then trained twice with GRPO from the same seed and data: ``adapo`` (adaptive
reward, dynamic KL) and ``baseline`` (weights 1/1/1, fixed β). Curves: ``OUT/adapo_vs_baseline.png``; numbers:
``OUT/report.json``.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.adapo_gsm [--warm 64 --steps 12] [--out-dir runs/adapo_gsm]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from alignment.adapo.config import AdapoConfig
from alignment.adapo.trainer import METRICS, plot_metrics, read_metrics, run_adapo
from alignment.seat.config import SeatSFTConfig
from alignment.seat.format import compose, cot_prompt, self_eval_prompt
from alignment.seat.sft import run_sft
from bench.gym_tasks import TASKS, problems, reference_steps


def reference_rows(task: str, n: int, seed: int, max_chars: int = 300) -> tuple[list[dict], list[dict]]:
    """(CoT rows, self-evaluation rows) in TRL's conversational prompt–completion format, from reference solutions."""
    rng = random.Random(seed)
    cot, selfeval = [], []
    for k, x in enumerate(problems(task, n, seed)):
        gold = str(x["answer"])
        steps = " ".join(reference_steps(task, x).split())[-max_chars:]  # the last steps: short rollouts fit on a CPU
        response = f"{steps} The answer is {gold}."
        cot.append({"id": str(k), "prompt": [{"role": "user", "content": cot_prompt(x["question"])}],
                    "completion": [{"role": "assistant", "content": response}]})
        if k % 2 == 0:
            target = compose(response, "The steps and the arithmetic check out.", "Accept", gold)
        else:
            wrong = str(int(float(gold)) + rng.choice([-10, -3, -1, 1, 2, 7]))
            target = compose(f"{steps} The answer is {wrong}.", f"Recomputing the last step gives {gold}, not "
                             f"{wrong}.", "Refine", gold)
        selfeval.append({"id": f"s{k}", "prompt": [{"role": "user", "content": self_eval_prompt(x["question"])}],
                         "completion": [{"role": "assistant", "content": target}]})
    return cot, selfeval


def merged_model(adapter: Path, base: Path, out: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    model.merge_and_unload().save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=Path("runs/adapo_gsm"))
    p.add_argument("--task", choices=list(TASKS), default="gsm_symbolic",
                   help="reasoning-gym task (default %(default)s)")
    p.add_argument("--warm", type=int, default=64, help="warm-start SFT problems (default %(default)s)")
    p.add_argument("--warm-epochs", type=float, default=3, help="warm-start SFT epochs (default %(default)s)")
    p.add_argument("--rl", type=int, default=32, help="GRPO problems (default %(default)s)")
    p.add_argument("--steps", type=int, default=12, help="GRPO steps per run (default %(default)s)")
    p.add_argument("--generations", type=int, default=4, help="rollouts per prompt (default %(default)s)")
    p.add_argument("--max-completion", type=int, default=160, help="tokens per rollout (default %(default)s)")
    p.add_argument("--lr", type=float, default=1e-5, help="GRPO learning rate (default %(default)s)")
    p.add_argument("--only", choices=["adapo", "baseline"], default=None, help="run one arm only")
    args = p.parse_args()
    torch.set_num_threads(1)
    from llm_common.smollm import base_model_dir

    out = args.out_dir
    data = out / "warm_data"
    data.mkdir(parents=True, exist_ok=True)
    cot, selfeval = reference_rows(args.task, args.warm, seed=1)
    (data / "cot.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cot))
    (data / "selfeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in selfeval))
    warm = SeatSFTConfig(data=str(data), out=str(out / "warm"), cot_ratio=0.0, epochs=args.warm_epochs,
                         batch_size=4, lr=1e-3)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    if not (out / "warm" / "final").is_dir():
        report["warm"] = run_sft(warm)
    model = merged_model(out / "warm" / "final", base_model_dir(), out / "warm_merged")
    rl = out / "rl.jsonl"
    rl.write_text("".join(json.dumps({"question": x["question"], "answer": str(x["answer"])}) + "\n"
                          for x in problems(args.task, args.rl, seed=3)))
    arms = {"adapo": (True, True), "baseline": (False, False)}
    for name, (adaptive, dynamic) in arms.items():
        if args.only and name != args.only:
            continue
        cfg = AdapoConfig(model=str(model), data=str(rl), out=str(out / name), steps=args.steps,
                          num_generations=args.generations, per_device_batch=args.generations,
                          max_completion_length=args.max_completion, lr=args.lr, beta0=0.04,
                          adaptive_reward=adaptive, dynamic_kl=dynamic, seed=0, temperature=0.7,
                          save_steps=max(args.steps // 2, 1))
        report[name] = run_adapo(cfg)
        rows = read_metrics(Path(cfg.out) / METRICS)
        keys = ("reward_mean", "kl", "beta", "answer_accuracy", "self_eval_accuracy", "malformed_rate")
        report[f"{name}_last3"] = {k: sum(r.get(k) or 0.0 for r in rows[-3:]) / max(len(rows[-3:]), 1) for k in keys}
        print(name, json.dumps(report[f"{name}_last3"]), flush=True)
    if all((out / n / "metrics.jsonl").is_file() for n in arms):
        plot_metrics({n: out / n for n in arms}, out / "adapo_vs_baseline.png")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {out / 'report.json'}")


if __name__ == "__main__":
    main()
