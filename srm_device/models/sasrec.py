"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018, arXiv 1808.09781).

Post-LN transformer encoder with learned absolute positions and a causal mask, as in RecBole's implementation
(GELU feed-forward, LayerNorm eps 1e-12, N(0, 0.02) initialisation). One difference remains by default: PyTorch's
encoder layer also drops out between the two feed-forward layers, RecBole's does not; ``ffn_dropout=0`` removes it.
Output item embeddings are tied to the input ones. Sequences are right-padded, so with a causal mask no real position
ever attends to padding (no all-masked rows, no NaN).
"""

from __future__ import annotations

import torch
from torch import nn

from srm_device.models.base import SequentialRecommender
from srm_device.models.config import SRMConfig
from srm_device.models.registry import register


@register
class SASRec(SequentialRecommender):
    name = "sasrec"

    def __init__(self, n_items: int, config: SRMConfig) -> None:
        super().__init__(n_items, config)
        d = config.hidden_size
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.emb_drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.n_heads, config.inner_size, config.dropout, activation="gelu", batch_first=True,
            norm_first=False, layer_norm_eps=1e-12,
        )
        if config.ffn_dropout is not None:  # the dropout inside the feed-forward block (RecBole's layer has none)
            layer.dropout = nn.Dropout(config.ffn_dropout)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, std=0.02)
            nn.init.zeros_(module.in_proj_bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        b, t = item_seq.shape
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds max_len {self.config.max_len}; keep the last max_len items")
        pos = torch.arange(t, device=item_seq.device)  # (t,)
        x = self.item_emb(item_seq) + self.pos_emb(pos)[None]  # (b, t, d)
        x = self.emb_drop(self.emb_norm(x))  # (b, t, d)
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=item_seq.device)  # (t, t)
        return self.encoder(x, mask=causal, is_causal=True)  # (b, t, d)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight  # (n+1, d)
