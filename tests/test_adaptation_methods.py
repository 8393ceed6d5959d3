"""The device-method registry: every method scores through one interface, a zero payload is the static SRM, and a
payload of the wrong shape or with non-finite values is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srm_device.adaptation import METHODS, make_method
from srm_device.adaptation.retrain import RetrainConfig
from srm_device.head import HeadShapeError
from srm_device.models import build_model, default_config
from srm_device.persona import Codebook

HISTORIES = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]


def _srm():
    torch.manual_seed(0)
    return build_model("sasrec", 50, default_config("sasrec", hidden_size=32, inner_size=64, max_len=12)).eval()


def _methods(srm):
    duet, head = make_method("duet", srm, rank=4), make_method("duet_head", srm, rank=4)
    m = 3
    zero_book = lambda p: Codebook(np.zeros((2, p), np.float32), np.eye(p, m, dtype=np.float32))  # noqa: E731
    zeros = lambda method: torch.zeros(len(HISTORIES), method.spec.n_params)  # noqa: E731
    persona_zero = (np.zeros(len(HISTORIES), np.int64), np.zeros((len(HISTORIES), m), np.float32))
    return {
        "static": (make_method("static", srm), None),
        "duet": (duet, zeros(duet)),
        "duet_head": (head, zeros(head)),
        "persona": (make_method("persona", srm, codebook=zero_book(duet.spec.n_params), rank=4), persona_zero),
        "persona_head": (make_method("persona_head", srm, codebook=zero_book(head.spec.n_params), rank=4),
                         persona_zero),
        "retrain": (make_method("retrain", srm, cfg=RetrainConfig()), None),
    }


def test_every_registered_method_with_a_zero_payload_is_the_static_srm():
    srm = _srm()
    methods = _methods(srm)
    assert set(methods) == set(METHODS)  # a new method must be added here
    static = methods["static"][0].scores(HISTORIES, None)  # (3, n+1)
    for name, (method, payload) in methods.items():
        scores = method.scores(HISTORIES, payload)
        assert scores.shape == static.shape and torch.isinf(scores[:, 0]).all(), name
        assert torch.allclose(scores[:, 1:], static[:, 1:], atol=1e-4), name
    assert [n for n, (m, _) in methods.items() if m.backprop] == ["retrain"]
    assert methods["persona"][0].payload_bytes() < methods["duet"][0].payload_bytes()


def test_bad_payloads_are_refused():
    srm = _srm()
    methods = _methods(srm)
    for name in ("duet", "duet_head"):
        method, good = methods[name]
        for bad in (good[:, :-1], torch.full_like(good, float("nan")), good[0]):
            with pytest.raises(HeadShapeError):
                method.check(bad)
    method, (ids, coefs) = methods["persona"]
    for bad in ((ids + 5, coefs), (ids, coefs[:, :-1]), (ids, np.full_like(coefs, np.inf)), "not a payload"):
        with pytest.raises(HeadShapeError):
            method.check(bad)
    with pytest.raises(ValueError, match="unknown device method 'nope'"):
        make_method("nope", srm)
    gru = build_model("gru4rec", 50, default_config("gru4rec", hidden_size=32, max_len=12))
    with pytest.raises(ValueError, match="transformer"):
        make_method("duet", gru)
