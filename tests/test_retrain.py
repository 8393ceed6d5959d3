"""On-device retraining: it learns from real-time targets only, and leaves the cloud SRM untouched."""

from __future__ import annotations

import numpy as np
import torch

from srm_device.adaptation.retrain import DeviceRetrainer, RetrainConfig
from srm_device.models import build_model, default_config


def _loss_on(model, seq: np.ndarray, cut: int) -> float:
    inp = torch.from_numpy(seq[cut - 1 : -1])[None]
    tgt = torch.from_numpy(seq[cut:])[None]
    with torch.no_grad():
        return float(model.calculate_loss(inp, tgt))


def test_retraining_fits_the_realtime_items_and_keeps_the_cloud_model():
    torch.manual_seed(0)
    srm = build_model("sasrec", 30, default_config("sasrec", hidden_size=16, inner_size=32, max_len=20)).eval()
    before = {k: v.clone() for k, v in srm.state_dict().items()}
    seq = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], dtype=np.int64)
    device = DeviceRetrainer(srm, RetrainConfig(steps=20, lr=1e-2, every=5))
    device.update(seq, cut=8, upto=8)  # nothing real-time seen yet: no update
    assert device.update_seconds == []
    assert all(torch.equal(a, b) for a, b in zip(device.model.state_dict().values(), before.values()))
    start = _loss_on(device.model, seq[:12], 8)
    device.update(seq, cut=8, upto=12)
    assert len(device.update_seconds) == 1 and device.update_seconds[0] > 0
    assert _loss_on(device.model, seq[:12], 8) < start - 0.5  # the real-time targets 9..12 got likelier
    assert all(torch.equal(v, before[k]) for k, v in srm.state_dict().items())  # the cloud SRM is unchanged
    n = sum(p.numel() for p in srm.parameters())
    assert device.state_bytes == 16 * n  # weights, gradients, two Adam moments, float32
