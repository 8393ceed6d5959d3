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


@dataclass
class CollabConfig:
    """LSC4Rec collaborative fine-tuning (arXiv 2502.08667): the LLM's lists for the last training prefixes become
    hard negatives for the SRM."""

    n_candidates: int = field(default=100, metadata={"help": "LLM candidate list length (1..100)"})
    prefixes_per_user: int = field(default=2, metadata={
        "help": "last training prefixes per user that get an LLM list and become fine-tuning examples (beam search "
                "costs about 0.1 s per list on CPU)"})
    epochs: int = field(default=10, metadata={"help": "maximum fine-tuning epochs"})
    patience: int = field(default=3, metadata={"help": "stop after this many epochs without a better validation "
                                                       "in-list NDCG@10"})
    lr: float = field(default=3e-4, metadata={"help": "Adam learning rate (small: the SRM is already trained)"})
    full_ce_weight: float = field(default=0.5, metadata={
        "help": "weight of the full-catalogue cross-entropy added to the in-list one (keeps whole-catalogue ranking)"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    seed: int = field(default=2020, metadata={"help": "random seed (shuffling, dropout)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if not 1 <= self.n_candidates <= 100:
            raise ValueError(f"--n-candidates must be in 1..100 (the LLM's beam limit), got {self.n_candidates}")
        for name in ("prefixes_per_user", "epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.full_ce_weight >= 0:
            raise ValueError(f"--full-ce-weight must be >= 0 (0 = in-list loss only), got {self.full_ce_weight}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = torch's default), got {self.threads}")
