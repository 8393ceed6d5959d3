import numpy as np
import pytest

from eval.bootstrap import ndcg_at, paired_bootstrap


def test_interval_covers_a_known_difference_and_detects_none():
    rng = np.random.default_rng(3)
    a = rng.random(2000)
    b = a + 0.05 + rng.normal(0, 0.1, 2000)  # a known shift of 0.05
    out = paired_bootstrap(a, b, resamples=2000)
    assert out["ci"][0] < 0.05 < out["ci"][1] and out["excludes_zero"] and abs(out["delta"] - 0.05) < 0.01
    same = paired_bootstrap(a, a + rng.normal(0, 0.1, 2000), resamples=2000)
    assert same["ci"][0] < 0 < same["ci"][1] and not same["excludes_zero"]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)  # seeded


def test_ndcg_and_bad_input():
    assert ndcg_at(np.array([0, 1, 9, 10]), 10).tolist() == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(11), 0])
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
