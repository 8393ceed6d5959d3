"""Cas-SEAT SFT (arXiv 2501.05662): mix the chain-of-thought and self-evaluation sets at a stated ratio and train the
student with TRL's SFTTrainer (conversational prompt–completion rows, loss on the completion only).

Mixing: with ``cot_ratio = r`` and ``examples = N`` (0: the largest N both sets allow at that ratio, i.e.
``min(n_cot / r, n_selfeval / (1 − r))``), ``round(r·N)`` CoT rows and the rest self-evaluation rows are drawn
without replacement (seeded) and shuffled; the mix is written to ``OUT/mix.jsonl`` with its counts in
``OUT/mix_report.json``. ``vision: true`` sends the mix (rows with ``images``) through TRL's vision-language path
(:mod:`alignment.seat.vlm`). Training resumes from the newest ``checkpoint-*`` in ``OUT``; the final model (or LoRA
adapter, ``lora_r > 0``) is written atomically to ``OUT/final``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from alignment.seat.config import SeatSFTConfig
from llm_common.sft_run import sft_args, train_and_save
from tandem.errors import TandemError
from tandem.io import atomic_write_json, atomic_write_text


def _read(path: Path, vision: bool = False) -> list[dict[str, Any]]:
    if not path.is_file():
        raise TandemError(f"{path} does not exist; run `tandem align filter` first")
    if vision:
        from alignment.seat.vlm import read_vlm_jsonl

        return read_vlm_jsonl(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mix(cot: list[dict], selfeval: list[dict], ratio: float, examples: int, seed: int) -> list[dict]:
    """Draw the CoT / self-evaluation mix (see the module doc); a TandemError when the sets cannot supply it."""
    limits = []
    if ratio > 0:
        limits.append(len(cot) / ratio)
    if ratio < 1:
        limits.append(len(selfeval) / (1 - ratio))
    most = int(min(limits) + 1e-9)
    n = examples or most
    k_cot = round(ratio * n)
    if n < 1 or k_cot > len(cot) or n - k_cot > len(selfeval):
        raise TandemError(f"cannot draw {n or 'any'} examples at cot_ratio {ratio}: there are {len(cot)} CoT and "
                          f"{len(selfeval)} self-evaluation examples (at most {most} at this ratio); lower examples "
                          f"or change cot_ratio")
    rng = random.Random(seed)
    rows = ([{**r, "kind": "cot"} for r in rng.sample(cot, k_cot)]
            + [{**r, "kind": "selfeval"} for r in rng.sample(selfeval, n - k_cot)])
    rng.shuffle(rows)
    return rows


def run_sft(cfg: SeatSFTConfig, progress: bool = True, tokenizer=None) -> dict[str, Any]:
    """Mix, train, save; returns the report (mix counts, steps, final training loss, seconds)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    cfg.validate()
    data, out = Path(cfg.data), Path(cfg.out)
    rows = mix(_read(data / "cot.jsonl", cfg.vision), _read(data / "selfeval.jsonl", cfg.vision), cfg.cot_ratio,
               cfg.examples, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "mix.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    counts = {"cot": sum(r["kind"] == "cot" for r in rows), "selfeval": sum(r["kind"] == "selfeval" for r in rows)}
    atomic_write_json(out / "mix_report.json", {**counts, "cot_ratio": cfg.cot_ratio})
    if cfg.vision:  # TRL's vision-language path (alignment/seat/vlm.py)
        from alignment.seat.vlm import run_vlm_sft

        report = run_vlm_sft(cfg.model, [{k: r[k] for k in ("images", "prompt", "completion")} for r in rows], out,
                             cfg.epochs, cfg.batch_size, cfg.lr, cfg.max_length, cfg.seed, lora_r=cfg.lora_r,
                             progress=progress, processor=tokenizer, save_steps=cfg.save_steps)
        report = {"mix": counts, **report, "model": cfg.model, "lora_r": cfg.lora_r, "vision": True}
        atomic_write_json(out / "sft_report.json", report)
        return report
    if cfg.model is None:
        from llm_common.smollm import base_model_dir

        model_dir = base_model_dir()
    else:
        model_dir = Path(cfg.model)
    tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = None
    if cfg.lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = sft_args(out, cfg.epochs, cfg.batch_size, cfg.lr, cfg.max_length, cfg.save_steps, cfg.seed, progress)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=peft_config)
    report = {"mix": counts, **train_and_save(trainer, out, tok), "model": str(model_dir), "lora_r": cfg.lora_r}
    atomic_write_json(out / "sft_report.json", report)
    return report
