"""GRU4Rec: session-based recommendation with recurrent networks (Hidasi et al., ICLR 2016, arXiv 1511.06939).

RecBole's variant, trained with cross-entropy over all items: embedding -> dropout -> GRU -> linear back to the
embedding width, scored against the item embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from srm_device.models.base import SequentialRecommender
from srm_device.models.config import SRMConfig
from srm_device.models.registry import register


@register
class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    # RecBole's GRU4Rec defaults: embedding 64, recurrent width 128, one layer, dropout 0.3.
    default_overrides = {"n_layers": 1, "inner_size": 128, "dropout": 0.3}

    def __init__(self, n_items: int, config: SRMConfig) -> None:
        super().__init__(n_items, config)
        d = config.hidden_size
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.emb_drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(d, config.inner_size, num_layers=config.n_layers, batch_first=True, bias=False)
        self.dense = nn.Linear(config.inner_size, d)
        nn.init.xavier_normal_(self.item_emb.weight)
        for name, param in self.gru.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(param)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        x = self.emb_drop(self.item_emb(item_seq))  # (b, t, d)
        out, _ = self.gru(x)  # (b, t, inner)
        return self.dense(out)  # (b, t, d)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight  # (n+1, d)
