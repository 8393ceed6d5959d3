"""Train a ThinkRec LoRA adapter with TRL's SFTTrainer and the α·BCE + β·LM loss (arXiv 2505.15091).

Input: JSONL rows ``{id, prompt, label, trace?}`` (:mod:`llm_cloud.thinkrec.build` writes them). Rows with a trace
are trained on ``trace + Answer: Yes|No`` with (α, β) = (0.1, 0.9); rows without one on the bare ``Answer: Yes|No``
with (0.9, 0.1). An expert starts from ``init_adapter`` (the general adapter) when given. Training resumes from the
newest ``checkpoint-*`` in ``out``; the adapter and tokenizer are written atomically to ``out/final``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from llm_cloud.thinkrec.encode import Encoder, pad_batch
from llm_cloud.thinkrec.loss import BARE_WEIGHTS, IGNORE, TRACE_WEIGHTS, thinkrec_loss
from llm_cloud.thinkrec.train_config import ThinkRecTrainConfig
from tandem.errors import TandemError
from tandem.io import atomic_write_json


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise TandemError(f"training data {path} does not exist; build it with `tandem thinkrec build`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tokenize(rows: list[dict], enc: Encoder) -> tuple[list[dict], int]:
    """Encoded examples with their (α, β), and how many rows were dropped as too long."""
    out, dropped = [], 0
    for row in rows:
        ex = enc.example(row["prompt"], int(row["label"]), row.get("trace"))
        if ex is None:
            dropped += 1
            continue
        alpha, beta = TRACE_WEIGHTS if row.get("trace") else BARE_WEIGHTS
        out.append(ex | {"alpha": alpha, "beta": beta})
    return out, dropped


class Collator:
    """Right-padded batches with labels −100 on the padding."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask, _ = pad_batch([r["input_ids"] for r in rows], self.pad_id, left=False)
        labels = torch.full_like(ids, IGNORE)
        for b, r in enumerate(rows):
            labels[b, : len(r["labels"])] = torch.tensor(r["labels"])
        scalars = {k: torch.tensor([r[k] for r in rows]) for k in ("answer_pos", "target", "alpha", "beta")}
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, **scalars}


def _trainer_class(yes_id: int, no_id: int):
    from trl import SFTTrainer

    class ThinkRecTrainer(SFTTrainer):
        """SFTTrainer whose loss is ThinkRec's α·BCE + β·LM (:func:`~llm_cloud.thinkrec.loss.thinkrec_loss`)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss, parts = thinkrec_loss(out.logits, inputs["labels"], inputs["answer_pos"], inputs["target"],
                                        inputs["alpha"], inputs["beta"], yes_id, no_id)
            self._parts = parts
            return (loss, out) if return_outputs else loss

        def log(self, logs: dict, *args, **kwargs) -> None:
            if "loss" in logs and getattr(self, "_parts", None):
                logs = logs | self._parts
            super().log(logs, *args, **kwargs)

    return ThinkRecTrainer


def run_train(cfg: ThinkRecTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train and save ``out/final``; returns (and writes to ``out/train_report.json``) what happened."""
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_common.sft_run import sft_args, train_and_save
    from llm_common.smollm import base_model_dir

    cfg.validate()
    model_dir = cfg.model or str(base_model_dir())
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = Encoder(tok, cfg.max_length)
    examples, dropped = tokenize(read_rows(cfg.data), enc)
    if not examples:
        raise TandemError(f"no training examples left in {cfg.data} ({dropped} longer than max_length "
                          f"{cfg.max_length}); raise max_length or shorten the prompts")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = None
    if cfg.init_adapter:
        model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
    else:
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    out = Path(cfg.out)
    args = sft_args(out, cfg.epochs, cfg.batch_size, cfg.lr, None, cfg.save_steps, cfg.seed, progress,
                    remove_unused_columns=False, completion_only_loss=None)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    trainer = _trainer_class(enc.yes_id, enc.no_id)(
        model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok,
        data_collator=Collator(pad), peft_config=peft_config)
    t0 = time.perf_counter()
    report = train_and_save(trainer, out, tok)
    n_trace = sum(1 for e in examples if e["alpha"] == TRACE_WEIGHTS[0])
    report |= {"examples": len(examples), "trace_examples": n_trace, "dropped_too_long": dropped,
               "wall_seconds": time.perf_counter() - t0, "model": model_dir, "init_adapter": cfg.init_adapter}
    if trainer.is_world_process_zero():  # under torchrun, one process writes
        atomic_write_json(out / "train_report.json", report)
    return report
