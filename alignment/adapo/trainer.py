"""AdaPO training loop (our design for arXiv 2508.09155) on TRL's ``GRPOTrainer``.

Multi-turn rollouts (answer, then self-evaluate and possibly revise) are realised as the three turns inside one
completion in the :mod:`alignment.seat.format` text format: "... The answer is N." then one
``[self-evaluation-start: ... Evaluation: Accept|Refine self-evaluation-end]`` block, then "The answer is M.". This
trains the same three sub-tasks as separate messages would, with no injected prompt tokens to mask; TRL's
experimental ``rollout_func`` would be the route to genuinely separate messages.

Each step: TRL samples ``num_generations`` rollouts per prompt, :class:`~alignment.adapo.reward.AdaptiveReward`
scores them (adaptive sub-task weights), and after the optimizer step a callback feeds the step's reward gap to
:class:`~alignment.adapo.kl.RewardGapKL` and sets ``trainer.beta`` — the β of the next step's loss. One JSON line per
step goes to ``OUT/metrics.jsonl``; ``beta`` is the β this step's loss used and ``beta_next`` the updated one.
Training resumes from the newest ``checkpoint-*`` in ``OUT`` (β and the reward weights come back from
``metrics.jsonl``; the outcome window starts empty again).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from alignment.adapo.config import AdapoConfig
from alignment.adapo.kl import RewardGapKL
from alignment.adapo.reward import SUBTASKS, AdaptiveReward
from alignment.seat.format import self_eval_prompt
from llm_common.sft_run import train_and_save
from tandem.io import JsonlAppender, atomic_write_json, atomic_write_text, read_jsonl

METRICS = "metrics.jsonl"


def read_problems(path: str | Path) -> list[dict[str, str]]:
    """Rows of ``{"question", "answer"}`` from a JSONL file; ValueError naming the line when one is bad."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist; pass a JSONL with 'question' and 'answer' per line")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise ValueError(f"{path} line {i} must be an object with 'question' and 'answer', got {line[:80]!r}; "
                             f"fix that line")
        rows.append({"question": str(row["question"]), "answer": str(row["answer"])})
    if not rows:
        raise ValueError(f"{path} holds no problems; add JSONL lines with 'question' and 'answer'")
    return rows


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)  # a line half-written by a crash is left out


def _make_callback(reward: AdaptiveReward, kl: RewardGapKL, metrics: Path):
    from transformers import TrainerCallback

    class AdapoCallback(TrainerCallback):
        """Updates β from the reward gap after each step and writes one metrics line per step."""

        def __init__(self) -> None:
            self.trainer: Any = None
            self.pending: dict[str, Any] | None = None
            self.restored = False
            self.sink: JsonlAppender | None = None  # opened once the kept lines are rewritten

        def on_step_begin(self, args, state, control, **kwargs):
            if self.restored:
                return
            # first step (TRL has restored global_step on resume by now, unlike at on_train_begin): keep the metric
            # lines up to that step and restore β and the reward weights from the last one
            self.restored = True
            kept = [r for r in read_metrics(metrics) if r["step"] <= state.global_step]
            if state.is_world_process_zero:  # the other processes under torchrun only read
                atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))
                self.sink = JsonlAppender(metrics)
            if kept:
                kl.beta = kept[-1]["beta_next"]
                reward.current = dict(kept[-1]["weights"])
            self.trainer.beta = kl.beta

        def on_step_end(self, args, state, control, **kwargs):
            stats = dict(reward.last_stats)
            beta_used = kl.beta
            gap = reward.reward_gap()
            self.trainer.beta = kl.update(gap)
            self.pending = {"step": state.global_step, "beta": beta_used, "beta_next": kl.beta, "reward_gap": gap,
                            **stats, "kl": None}

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.pending is None or not logs or "train_runtime" in logs:
                return
            self.pending["kl"] = logs.get("kl")
            self._flush(state)

        def on_train_end(self, args, state, control, **kwargs):
            if self.pending is not None:
                self._flush(state)
            if self.sink is not None:
                self.sink.close()

        def _flush(self, state) -> None:
            if not state.is_world_process_zero:
                self.pending = None
                return
            if self.sink is None:  # a step ended before any began: nothing was kept or rewritten
                self.sink = JsonlAppender(metrics)
            self.sink.write(self.pending)
            self.pending = None

    return AdapoCallback()


def grpo_args(cfg: AdapoConfig, progress: bool = True):
    import torch
    from trl import GRPOConfig

    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    cuda = torch.cuda.is_available()
    report_to = ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else "none"
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.out, max_steps=cfg.steps, per_device_train_batch_size=cfg.per_device_batch,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length, learning_rate=cfg.lr,
        beta=cfg.beta0, logging_steps=1, save_steps=cfg.save_steps, report_to=report_to, use_cpu=not cuda,
        seed=cfg.seed, temperature=cfg.temperature, disable_tqdm=not progress,
        bf16=cuda and torch.cuda.is_bf16_supported())
    missing = sorted(set(kwargs) - names)
    if missing:
        raise ValueError(f"this TRL's GRPOConfig lacks fields {missing}; install trl>=1.16 (see pyproject.toml)")
    return GRPOConfig(**kwargs)


def run_adapo(cfg: AdapoConfig, progress: bool = True, tokenizer: Any = None) -> dict[str, Any]:
    """Train with GRPO, the adaptive reward and the dynamic β; returns (and writes) a summary dict.

    ``tokenizer`` overrides the one loaded from ``cfg.model`` (passed to TRL as ``processing_class``).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_problems(cfg.data)
    tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.model)
    # a chat model gets its prompts as conversations (TRL applies the chat template), as Cas-SEAT SFT trained it
    chat = getattr(tok, "chat_template", None) is not None

    def prompt(question: str) -> Any:
        text = self_eval_prompt(question)
        return [{"role": "user", "content": text}] if chat else text

    dataset = Dataset.from_list([{"prompt": prompt(r["question"]), "answer": r["answer"]} for r in rows])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    peft_config = None
    if cfg.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    reward = AdaptiveReward(adaptive=cfg.adaptive_reward, window=cfg.window)
    kl = RewardGapKL(cfg.beta0, target_gap=cfg.kl_target_gap, rate=cfg.kl_rate, fixed=not cfg.dynamic_kl)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=grpo_args(cfg, progress), train_dataset=dataset,
                          processing_class=tok, peft_config=peft_config)
    callback = _make_callback(reward, kl, out / METRICS)
    callback.trainer = trainer
    trainer.add_callback(callback)
    run = train_and_save(trainer, out, tok)  # resumes; under torchrun only the first process writes final/
    lines = read_metrics(out / METRICS)
    summary = {"steps": run["steps"], "resumed": run["resumed"], "beta_final": kl.beta,
               "weights_final": dict(reward.current), "seconds": run["seconds"],
               "adaptive_reward": cfg.adaptive_reward, "dynamic_kl": cfg.dynamic_kl,
               "metrics": str(out / METRICS), "final": str(out / "final"),
               "last": {k: lines[-1].get(k) for k in ("reward_mean", "answer_accuracy", "self_eval_accuracy",
                                                      "final_accuracy", "malformed_rate")} if lines else {}}
    if trainer.is_world_process_zero():
        atomic_write_json(out / "adapo_report.json", summary)
    return summary


PANELS = (("reward_mean", "total reward"), ("kl", "KL to reference"), ("beta", "β"),
          ("answer_accuracy", "answer accuracy"), ("self_eval_accuracy", "self-eval accuracy"))


def plot_metrics(runs: dict[str, Path], png: Path) -> Path:
    """One figure comparing runs (name → run folder or metrics.jsonl), written atomically to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for name, where in runs.items():
        where = Path(where)
        rows = read_metrics(where / METRICS if where.is_dir() else where)
        for ax, (key, title) in zip(axes, PANELS):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], label=name)
            ax.set_title(title)
            ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=png.parent, prefix=f".{png.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, png)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return png


__all__ = ["SUBTASKS", "grpo_args", "plot_metrics", "read_metrics", "read_problems", "run_adapo"]
