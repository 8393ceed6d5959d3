"""The device session never fails the user: degraded mode, bad candidates, bad parameters."""

import time

import numpy as np
import pytest
import torch

from srm_device.head import HeadSpec
from srm_device.models import build_model, default_config
from srm_device.policies import make_policy
from srm_device.policies.base import Threshold
from srm_device.session import DeviceSession

N_ITEMS = 30
SPEC = HeadSpec(16, 2)


class FakeCloud:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.calls = 0

    def candidates(self, history, n):
        self.calls += 1
        if self.mode == "down":
            raise ConnectionError("connection refused")
        if self.mode == "slow":
            time.sleep(1.0)
        if self.mode == "garbage":
            return np.array([1, 2, 999]), np.array([0.0, -1.0, -2.0])
        ids = np.arange(1, min(n, N_ITEMS) + 1)
        return ids, -np.arange(len(ids), dtype=float)

    def parameters(self, recent):
        if self.mode == "badshape":
            return np.zeros(SPEC.n_params + 3)
        return np.full(SPEC.n_params, 0.01)


def session(mode: str, policy: str = "always") -> DeviceSession:
    torch.manual_seed(0)
    model = build_model("sasrec", N_ITEMS, default_config("sasrec", hidden_size=16, inner_size=32, max_len=8))
    th = Threshold(-np.inf, 0.0, 1.0) if policy == "always" else Threshold(np.inf, 0.0, 0.0)
    s = DeviceSession(model, SPEC, make_policy(policy), th, FakeCloud(mode), n_candidates=20, timeout_s=0.2)
    for item in (3, 4, 5):
        s.observe(item)
    return s


def test_healthy_cloud_fills_cache_and_reranks():
    s = session("ok")
    rec = s.recommend(k=5)
    assert rec.requested and not rec.degraded
    assert len(rec.items) == 5 and set(rec.items) <= set(range(1, 21))
    assert rec.fused == sorted(rec.fused, reverse=True)


@pytest.mark.parametrize("mode", ["down", "slow", "garbage"])
def test_cloud_failure_degrades_with_cache(mode):
    s = session("ok")
    s.recommend(k=5)  # fills the cache
    s.client = FakeCloud(mode)
    t0 = time.perf_counter()
    rec = s.recommend(k=5)
    assert time.perf_counter() - t0 < 0.9  # the slow cloud is cut off at the deadline
    assert rec.degraded and rec.requested and len(rec.items) == 5
    assert set(rec.items) <= set(range(1, 21))  # ranked from the cached list
    assert rec.notes


def test_cloud_down_and_nothing_cached_ranks_catalogue():
    rec = session("down").recommend(k=7)
    assert rec.degraded and len(rec.items) == 7 and len(set(rec.items)) == 7
    assert all(1 <= i <= N_ITEMS for i in rec.items)


def test_never_policy_does_not_call_cloud_once_cached():
    s = session("ok", policy="never")
    s.recommend()  # empty cache forces one request
    calls = s.client.calls
    rec = s.recommend()
    assert not rec.requested and s.client.calls == calls


def test_bad_parameters_are_rejected_keeping_last_good():
    s = session("ok")
    assert s.refresh_parameters()
    good = s.head.flatten().clone()
    assert torch.allclose(good, torch.full_like(good, 0.01))
    s.client = FakeCloud("badshape")
    assert not s.refresh_parameters()
    assert torch.equal(s.head.flatten(), good) and s.rejected_updates == 1


def test_bad_candidate_lists_are_refused():
    s = session("ok")
    with pytest.raises(ValueError, match="empty"):
        s.set_candidates([], [])
    with pytest.raises(ValueError, match=r"unknown candidate item ids \[999\]"):
        s.set_candidates([1, 999], [0.0, 0.0])
    with pytest.raises(ValueError, match="outside this catalogue"):
        s.observe(0)
