"""``duet_head``: a generated low-rank edit of the SRM head only (the one-layer configuration of DUET, arXiv
2302.04397; :mod:`srm_device.head`). The payload is the flat parameters (n, 2·d·r + d), one row per history."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from srm_device.adaptation.base import DeviceMethod, register
from srm_device.head import HeadShapeError, HeadSpec, apply_head, split_head
from srm_device.models import SequentialRecommender
from srm_device.persona import FLOAT32
from srm_device.scoring import user_vectors


@register
class HeadEdit(DeviceMethod):
    name = "duet_head"

    def __init__(self, srm: SequentialRecommender, rank: int = 8) -> None:
        super().__init__(srm)
        self.spec = HeadSpec(srm.config.hidden_size, rank)

    def check(self, payload: torch.Tensor) -> torch.Tensor:
        flat = torch.as_tensor(payload, dtype=torch.float32)
        if flat.dim() != 2 or flat.size(1) != self.spec.n_params:
            raise HeadShapeError(f"generated head parameters have shape {tuple(flat.shape)}, this SRM needs "
                                 f"(n, {self.spec.n_params})")
        if not torch.isfinite(flat).all():
            raise HeadShapeError("generated head parameters have non-finite values")
        return flat

    @torch.no_grad()
    def user_states(self, histories: Sequence, payload: torch.Tensor) -> torch.Tensor:
        flat = self.check(payload)
        return apply_head(user_vectors(self.srm, histories), *split_head(flat, self.spec))  # (n, d)

    def payload_bytes(self) -> int:
        return FLOAT32 * self.spec.n_params
