"""Training hyperparameters of an SRM (flags of ``tandem train srm``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class TrainConfig:
    epochs: int = field(default=200, metadata={"help": "maximum number of epochs"})
    patience: int = field(default=10, metadata={
        "help": "stop after this many epochs without a better validation NDCG@10"})
    batch_size: int = field(default=128, metadata={"help": "training windows per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    window_stride: int = field(default=10, metadata={
        "help": "for sequences longer than max_len: step between training windows (1 = one row per prefix, "
                "as RecBole)"})
    seed: int = field(default=2020, metadata={"help": "random seed (initialisation, shuffling, dropout)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    # Changing these between runs does not invalidate a partly trained checkpoint (resume continues).
    RESUMABLE_CHANGES = ("epochs", "patience", "threads")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name in ("epochs", "patience", "batch_size", "window_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
