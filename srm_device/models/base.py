"""Abstract base of the sequential recommenders (RecBole's split: loss and full ranking; candidate scores are in
:mod:`srm_device.scoring`).

Every model is causal: ``forward`` returns one hidden state per position, and position ``i`` depends only on items
``0..i``. Training therefore takes the loss at every position of a sequence in one pass, which is the same supervision
as one example per prefix (RecBole's rows) for far less compute. Sequences are right-padded with item 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from srm_device.models.config import SRMConfig


class SequentialRecommender(nn.Module, ABC):
    name: ClassVar[str]
    default_overrides: ClassVar[dict] = {}

    def __init__(self, n_items: int, config: SRMConfig) -> None:
        super().__init__()
        config.validate()
        self.n_items = n_items
        self.config = config

    @abstractmethod
    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """item_seq (b, t) right-padded ids -> hidden states (b, t, d), causal."""

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, d) output item embeddings; row 0 is padding."""

    def sequence_output(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state at each sequence's last real item: (b, t), (b,) -> (b, d)."""
        hidden = self(item_seq)  # (b, t, d)
        return hidden[torch.arange(hidden.size(0)), lengths - 1]  # (b, d)

    def full_sort_scores(self, item_seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores for every item: (b, t), (b,) -> (b, n_items + 1); column 0 (padding) is -inf."""
        user = self.sequence_output(item_seq, lengths)  # (b, d)
        scores = user @ self.item_embeddings().T  # (b, n+1)
        scores[:, 0] = -torch.inf
        return scores

    def calculate_loss(self, item_seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over all real items at every position whose target is not 0.

        item_seq (b, t) inputs; targets (b, t) next items, 0 where no loss is taken.
        """
        hidden = self(item_seq)  # (b, t, d)
        keep = targets > 0  # (b, t)
        logits = hidden[keep] @ self.item_embeddings()[1:].T  # (m, n)
        return F.cross_entropy(logits, targets[keep] - 1)
