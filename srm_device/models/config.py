"""Hyperparameters shared by the SRMs; each model reads the fields it needs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class SRMConfig:
    hidden_size: int = field(default=64, metadata={"help": "item embedding / model width"})
    n_layers: int = field(default=2, metadata={"help": "transformer blocks (SASRec) or GRU layers (GRU4Rec)"})
    n_heads: int = field(default=2, metadata={"help": "attention heads (SASRec)"})
    inner_size: int = field(default=256, metadata={
        "help": "feed-forward width (SASRec) or recurrent width (GRU4Rec)"})
    dropout: float = field(default=0.5, metadata={"help": "dropout probability"})
    max_len: int = field(default=50, metadata={"help": "longest history the model reads (older items are cut)"})
    ffn_dropout: float | None = field(default=None, metadata={
        "help": "SASRec: dropout between the feed-forward layers (PyTorch's encoder layer has it, RecBole's has "
                "none: 0); default: --dropout"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.hidden_size % max(1, self.n_heads):
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by n_heads ({self.n_heads}); "
                             f"change one of them")
        for name in ("hidden_size", "n_layers", "n_heads", "inner_size", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ffn_dropout is not None and not 0.0 <= self.ffn_dropout < 1.0:
            raise ValueError(f"ffn_dropout must be in [0, 1), got {self.ffn_dropout}")
