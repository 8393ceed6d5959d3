"""On-device retraining, the baseline the parameter-generating methods claim to avoid (LSC4Rec's real-time
retraining step, arXiv 2502.08667; DUET arXiv 2302.04397 compares against fine-tuning in the same role).

The device keeps its own copy of the SRM and, at each update, takes a few Adam steps of the SRM's full cross-entropy
on its real-time items seen so far: the targets ``s[c..t-1]`` with their histories, the cloud part included as
context but never as a target (the cloud already trained on it). Updates accumulate on the device copy. Dropout is off
while fine-tuning (our choice: with a handful of steps on one sequence, dropout noise dominates the gradient).

The cost is what matters here: the device runs backward passes and holds gradients and optimiser state. ``state_bytes``
counts weights, gradients and Adam's two moments; ``update_seconds`` holds the wall time of each update.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from srm_device.adaptation.base import DeviceMethod, register
from srm_device.models import SequentialRecommender
from srm_device.scoring import user_vectors

FLOAT32 = 4


@dataclass
class RetrainConfig:
    steps: int = field(default=3, metadata={"help": "Adam steps per on-device update"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the on-device fine-tuning"})
    every: int = field(default=5, metadata={"help": "fine-tune after every this many new real-time items"})

    def validate(self) -> None:
        if self.steps < 1 or self.every < 1 or self.lr <= 0:
            raise ValueError(f"retrain steps and every must be >= 1 and lr > 0, got {self}")


@register
class DeviceRetrainer(DeviceMethod):
    """``retrain``: one device's copy of its SRM and the optimiser that fine-tunes it; the cloud sends nothing."""

    name = "retrain"
    backprop = True

    def __init__(self, srm: SequentialRecommender, cfg: RetrainConfig | None = None) -> None:
        super().__init__(srm)
        cfg = cfg or RetrainConfig()
        cfg.validate()
        self.cfg = cfg
        self.model = copy.deepcopy(srm).eval()
        self.model.requires_grad_(True)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.update_seconds: list[float] = []

    @property
    def state_bytes(self) -> int:
        """Weights, gradients and Adam's two moments, float32."""
        return 4 * FLOAT32 * sum(p.numel() for p in self.model.parameters())

    def user_states(self, histories, payload: None = None) -> torch.Tensor:
        return user_vectors(self.model, histories)  # (n, d) from the device's fine-tuned copy

    def update(self, sequence: np.ndarray, cut: int, upto: int) -> None:
        """Fine-tune on targets ``sequence[cut:upto]`` (real-time items seen so far), each from its history."""
        if upto <= cut:
            return
        start = time.perf_counter()
        max_len = self.model.config.max_len
        first = max(0, upto - 1 - max_len)
        inp = torch.from_numpy(np.ascontiguousarray(sequence[first : upto - 1], dtype=np.int64))[None]  # (1, L)
        tgt = torch.from_numpy(np.ascontiguousarray(sequence[first + 1 : upto], dtype=np.int64))[None]  # (1, L)
        target_index = torch.arange(first + 1, upto)[None]  # (1, L) position of each target in the sequence
        tgt = torch.where(target_index >= cut, tgt, torch.zeros_like(tgt))  # cloud-part targets carry no loss
        with torch.enable_grad():
            for _ in range(self.cfg.steps):
                self.opt.zero_grad(set_to_none=True)
                self.model.calculate_loss(inp, tgt).backward()
                self.opt.step()
        self.update_seconds.append(time.perf_counter() - start)
