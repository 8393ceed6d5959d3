"""The device session never fails the user: degraded mode, bad candidates, bad parameters."""

import time

import numpy as np
import pytest
import torch

from srm_device.adaptation import make_method
from srm_device.models import build_model, default_config
from srm_device.policies import make_policy
from srm_device.policies.base import Threshold
from srm_device.session import DeviceSession

N_ITEMS = 30


class FakeCloud:
    def __init__(self, mode: str = "ok", n_params: int = 2 * 16 * 2 + 16) -> None:
        self.mode, self.n_params = mode, n_params
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
            return np.zeros(self.n_params + 3)
        if self.mode == "nan":
            return np.full(self.n_params, np.nan)
        return np.full(self.n_params, 0.01)


def session(mode: str, policy: str = "always", method: str = "duet_head") -> DeviceSession:
    torch.manual_seed(0)
    model = build_model("sasrec", N_ITEMS, default_config("sasrec", hidden_size=16, inner_size=32, max_len=8))
    th = Threshold(-np.inf, 0.0, 1.0) if policy == "always" else Threshold(np.inf, 0.0, 0.0)
    device = make_method(method, model, rank=2)
    s = DeviceSession(model, device, make_policy(policy), th, FakeCloud(mode, device.spec.n_params), n_candidates=20,
                      timeout_s=0.2)
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


@pytest.mark.parametrize("method", ["duet_head", "duet"])
def test_bad_parameters_are_rejected_keeping_last_good(method):
    s = session("ok", method=method)
    static = s.recommend(k=20)
    assert s.payload is None and s.refresh_parameters()
    good = s.payload.clone()
    assert good.shape == (1, s.method.spec.n_params) and torch.allclose(good, torch.full_like(good, 0.01))
    adapted = s.recommend(k=20)
    assert not np.allclose(adapted.srm, static.srm)  # the received parameters change the device's scores
    for bad in ("badshape", "nan"):
        s.client = FakeCloud(bad, s.method.spec.n_params)
        assert not s.refresh_parameters()
    assert torch.equal(s.payload, good) and s.rejected_updates == 2
    assert np.allclose(s.recommend(k=20).srm, adapted.srm)  # still ranked with the last good parameters


def test_bad_candidate_lists_are_refused():
    s = session("ok")
    with pytest.raises(ValueError, match="empty"):
        s.set_candidates([], [])
    with pytest.raises(ValueError, match=r"unknown candidate item ids \[999\]"):
        s.set_candidates([1, 999], [0.0, 0.0])
    with pytest.raises(ValueError, match="outside this catalogue"):
        s.observe(0)
