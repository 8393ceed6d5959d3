import numpy as np
import pytest

from srm_device.fusion import FUSION_RULES, FusionInputs, FusionParams, Platt, fuse


def inputs():
    # two candidates in a list of N=4 shown: ranks 1 and 3; SRM logits chosen so that with Platt(1, 0)
    # p = σ(3) ≈ 0.9526 (confident) and p = σ(0.2) ≈ 0.5498 (not confident)
    return FusionInputs(llm_rank=np.array([[1, 3, 2, 4]]), llm_score=np.array([[-1.0, -3.0, -2.0, -4.0]]),
                        srm_logit=np.array([[0.2, 3.0, 0.0, -3.0]]))


def test_rules_hand_computed():
    x, prm = inputs(), FusionParams()
    s = 1 / (1 + np.exp(-np.array([0.2, 3.0, 0.0, -3.0])))
    np.testing.assert_allclose(fuse("llm", x, prm), [[-1, -3, -2, -4]])
    np.testing.assert_allclose(fuse("sum", x, prm), [[-1 / 4 + s[0] - 0.5, -3 / 4 + s[1] - 0.5, -2 / 4 + 0.0,
                                                      -1 + s[3] - 0.5]])
    np.testing.assert_allclose(fuse("sum2", x, prm)[0, 1], -3 / 4 + 2 * (s[1] - 0.5))
    gated = fuse("gated", x, prm)[0]
    assert gated[0] == pytest.approx(0.5 - 1 / 4)  # |0.5498 - 0.5| < 0.4: the SRM term is gated off
    assert gated[1] == pytest.approx(0.5 - 3 / 4 + s[1] - 0.5)  # |0.9526 - 0.5| > 0.4: it counts
    assert gated[3] == pytest.approx(0.5 - 1 + s[3] - 0.5)  # σ(-3) = 0.047: confident negative counts too
    np.testing.assert_allclose(fuse("srm", x, prm), [s])
    learned = fuse("learned", x, FusionParams(srm=Platt(2.0, 1.0), llm=Platt(0.5, 0.0), alpha=0.25))
    np.testing.assert_allclose(learned, 0.25 * 0.5 * x.llm_score + 0.75 * (2.0 * x.srm_logit + 1.0))


def test_rule_names_and_unknown():
    assert set(FUSION_RULES) == {"llm", "gated", "sum", "sum2", "srm", "learned"}
    with pytest.raises(ValueError, match="known rules are"):
        fuse("mean", inputs(), FusionParams())
