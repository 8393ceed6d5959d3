"""The TRL ``SFTConfig`` and the resume/train/save tail shared by Tandem's LoRA SFT runs (Cas-SEAT text and
vision-language SFT in :mod:`alignment.seat`, ThinkRec in :mod:`llm_cloud.thinkrec`)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tandem.io import atomic_directory

TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last into a checkpoint folder


def last_checkpoint(folder: Path) -> Path | None:
    """The newest Trainer ``checkpoint-<step>`` in ``folder`` that was written to the end, or None.

    The Trainer writes a checkpoint's files one after another and ``trainer_state.json`` last, so a run killed while
    saving leaves a folder without a readable one; resuming from it fails. Such a folder is deleted (with a line on
    stderr) and the checkpoint before it is used. (transformers' ``get_last_checkpoint`` takes the newest folder
    whatever it holds.)"""
    found = [p for p in Path(folder).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((path / TRAINER_STATE).read_text())
            return path
        except (OSError, ValueError):
            print(f"deleting {path}: a checkpoint cut short while it was written (no readable {TRAINER_STATE})",
                  file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    return None


def sft_args(out: Path, epochs: float, batch_size: int, lr: float, max_length: int | None, save_steps: int,
             seed: int, progress: bool, **extra: Any):
    """TRL ``SFTConfig`` of these runs: completion-only loss unless ``extra`` says otherwise, a log line per step,
    CPU unless CUDA is there."""
    import torch
    from trl import SFTConfig

    return SFTConfig(output_dir=str(out), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                     learning_rate=lr, max_length=max_length, logging_steps=1, save_steps=save_steps,
                     save_total_limit=2, report_to="none", use_cpu=not torch.cuda.is_available(), seed=seed,
                     disable_tqdm=not progress, dataset_num_proc=1, **({"completion_only_loss": True} | extra))


def train_and_save(trainer, out: Path, processing_class) -> dict[str, Any]:
    """Train (resuming from the newest ``checkpoint-*`` in ``out``), write the model and ``processing_class``
    atomically to ``out/final``; returns steps, first/final logged loss, seconds, final folder, resumed.

    Under ``torchrun`` every process trains its share and only the first writes ``final/``; the others wait for it."""
    with trainer.accelerator.main_process_first():  # the first drops a checkpoint cut short, the others then agree
        last = last_checkpoint(out)
    resume = last is not None
    result = trainer.train(resume_from_checkpoint=str(last) if resume else None)
    if trainer.is_world_process_zero():
        with atomic_directory(out / "final") as tmp:
            trainer.save_model(str(tmp))
            processing_class.save_pretrained(str(tmp))
    trainer.accelerator.wait_for_everyone()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "seconds": result.metrics.get("train_runtime"),
            "final": str(out / "final"), "resumed": resume}
