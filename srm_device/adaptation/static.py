"""``static``: the cloud-trained SRM as deployed, run on the device's fresh history; the cloud sends nothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from srm_device.adaptation.base import DeviceMethod, register
from srm_device.scoring import user_vectors


@register
class Static(DeviceMethod):
    name = "static"

    def user_states(self, histories: Sequence, payload: None = None) -> torch.Tensor:
        return user_vectors(self.srm, histories)  # (n, d)
