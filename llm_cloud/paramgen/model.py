"""The hypernetwork: recent items -> low-rank edit of the SRM head (DUET, arXiv 2302.04397).

    z = MLP(GRU(emb(recent k items)))          (n, z)
    θ = z · W + c                              (n, 2·d·r + d)  -> A (d, r), B (d, r), b (d,)

The A-part of W starts at zero and the B-part small and random, so before training every user gets the static SRM
and gradients still reach A and B. Item embeddings start from the SRM's. One forward
pass per update; the device never back-propagates.
"""

from __future__ import annotations

import torch
from torch import nn

from llm_cloud.paramgen.config import ParamGenConfig
from srm_device.head import HeadSpec, split_head

B_INIT_STD = 0.02


class RecentItemCoder(nn.Module):
    """The user code both generators share: z = MLP(GRU(emb(recent k items))), item embeddings from the SRM's."""

    def __init__(self, n_items: int, d: int, cfg: ParamGenConfig, item_init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        if item_init is not None:
            with torch.no_grad():
                self.item_emb.weight.copy_(item_init)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, cfg.gru_size, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(cfg.gru_size, cfg.z_size), nn.GELU(), nn.Linear(cfg.z_size, cfg.z_size),
                                 nn.GELU())

    def code(self, recent: torch.Tensor) -> torch.Tensor:
        """recent (n, k) item ids, left-padded with 0 (newest last) -> z (n, z_size)."""
        x = self.drop(self.item_emb(recent))  # (n, k, d)
        _, h = self.gru(x)  # h: (1, n, g)
        return self.mlp(h[-1])  # (n, z)


class ParamGenerator(RecentItemCoder):
    def __init__(self, n_items: int, spec: HeadSpec, cfg: ParamGenConfig,
                 item_init: torch.Tensor | None = None) -> None:
        d = spec.hidden_size
        super().__init__(n_items, d, cfg, item_init)
        self.spec = spec
        self.out = nn.Linear(cfg.z_size, spec.n_params)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        r = spec.rank
        # B small and random, A zero (as LoRA): the edit starts at zero and both factors get gradients; with both
        # at zero neither would ever move, and only the bias would be learned
        nn.init.normal_(self.out.weight[d * r : 2 * d * r], std=B_INIT_STD)

    def forward(self, recent: torch.Tensor) -> torch.Tensor:
        """recent (n, k) item ids, left-padded with 0 (newest last) -> flat parameters (n, n_params)."""
        return self.out(self.code(recent))  # (n, n_params)

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, n_params) -> A (n, d, r), B (n, d, r), bias (n, d)."""
        return split_head(flat, self.spec)
