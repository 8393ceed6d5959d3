"""The interface of the device adaptation methods, and their one registry (``METHODS``).

A method is what the device does between the cloud and its ranking: it takes the device's SRM, the device's fresh
histories and what the cloud sent (the payload: nothing, generated parameters, or a Persona prototype id with edit
coefficients) and returns the user states the SRM's item embeddings score. The evaluation and the device session
call the same method, so what is measured is what runs. ``check`` refuses a payload that does not fit this SRM or
holds non-finite values (:class:`srm_device.head.HeadShapeError`), so a device keeps its last good one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from srm_device.models import SequentialRecommender


class DeviceMethod(ABC):
    name: ClassVar[str]
    backprop: ClassVar[bool] = False  # whether the device runs backward passes (retraining)

    def __init__(self, srm: SequentialRecommender) -> None:
        self.srm = srm.eval()

    def check(self, payload: Any) -> Any:
        """``payload`` if it fits; HeadShapeError naming the mismatch otherwise."""
        return payload

    @abstractmethod
    def user_states(self, histories: Sequence, payload: Any) -> torch.Tensor:
        """(n, d) user states of ``histories`` (n sequences of item ids) under ``payload`` (one row per history)."""

    def payload_bytes(self) -> int:
        """Bytes the cloud sends down for one update."""
        return 0

    @torch.no_grad()
    def scores(self, histories: Sequence, payload: Any) -> torch.Tensor:
        """(n, n_items + 1) scores of every item; column 0 (padding) is -inf."""
        s = self.user_states(histories, payload) @ self.srm.item_embeddings().T  # (n, n+1)
        s[:, 0] = -torch.inf
        return s


METHODS: dict[str, type[DeviceMethod]] = {}


def register(cls: type[DeviceMethod]) -> type[DeviceMethod]:
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, srm: SequentialRecommender, **kwargs) -> DeviceMethod:
    if name not in METHODS:
        raise ValueError(f"unknown device method {name!r}; known methods are {', '.join(sorted(METHODS))}")
    return METHODS[name](srm, **kwargs)
