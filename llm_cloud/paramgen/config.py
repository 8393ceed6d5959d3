"""Hyperparameters of the parameter generator (flags of ``tandem train paramgen``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class ParamGenConfig:
    recent_k: int = field(default=20, metadata={"help": "how many of the user's most recent items the device sends"})
    rank: int = field(default=8, metadata={"help": "rank r of the generated head edit A·Bᵀ"})
    gru_size: int = field(default=64, metadata={"help": "width of the GRU over the recent items"})
    z_size: int = field(default=64, metadata={"help": "width of the user code z"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on the item embeddings"})
    epochs: int = field(default=30, metadata={"help": "maximum epochs"})
    patience: int = field(default=4, metadata={"help": "stop after this many epochs without better valid NDCG@10"})
    batch_size: int = field(default=512, metadata={"help": "training positions per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay"})
    n_prototypes: int = field(default=32, metadata={"help": "Persona prototypes P (k-means over generated params)"})
    edit_dim: int = field(default=8, metadata={"help": "size of the per-update edit (PCA coefficients)"})
    seed: int = field(default=2020, metadata={"help": "random seed"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    RESUMABLE_CHANGES = ("epochs", "patience", "threads")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name in ("recent_k", "rank", "gru_size", "z_size", "epochs", "patience", "batch_size", "n_prototypes",
                     "edit_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
