"""Settings of one ThinkRec adapter's training (:func:`llm_cloud.thinkrec.train.run_train`), apart from the trainer so
that `tandem train thinkrec --help` lists them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ThinkRecTrainConfig:
    data: str = field(metadata={"help": "JSONL of {id, prompt, label, trace?} rows"})
    out: str = field(metadata={"help": "output folder (checkpoints, final/ adapter, train_report.json)"})
    model: str | None = field(default=None, metadata={"help": "base model folder (default SmolLM2-135M-Instruct)"})
    init_adapter: str | None = field(default=None, metadata={"help": "LoRA adapter to continue from (experts)"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the data"})
    batch_size: int = field(default=4, metadata={"help": "examples per step"})
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (q, k, v, o projections)"})
    max_length: int = field(default=768, metadata={"help": "longest example in tokens; longer ones are dropped"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps (resume point)"})
    seed: int = field(default=0, metadata={"help": "shuffling and initialisation seed"})

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "lr", "lora_r", "max_length", "save_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
