import numpy as np
import pytest

from srm_device.policies import POLICIES, PolicyInputs, make_policy


def synthetic_inputs(n_users: int, seed: int, c: int = 30, d: int = 8, k: int = 6, max_len: int = 20):
    rng = np.random.default_rng(seed)
    recent = rng.normal(size=(n_users, k, d)) * rng.uniform(0.1, 2.0, size=(n_users, 1, 1))
    hist_len = rng.integers(3, 60, size=n_users)
    recent[hist_len < k] = 0.0  # some users have padded recent windows
    cand = rng.normal(size=(n_users, c, d))
    user = recent.mean(1) + rng.normal(size=(n_users, d))
    srm = np.einsum("ud,ucd->uc", user, cand)
    llm_rank = np.argsort(np.argsort(-(srm + rng.normal(scale=2.0, size=srm.shape)), axis=1), axis=1) + 1
    mass = rng.uniform(0.05, 0.9, size=n_users)
    return PolicyInputs(srm, llm_rank, hist_len, max_len, user, recent, cand, mass, rng.uniform(0.01, 0.6, n_users))


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.2, 0.5, 1.0])
def test_calibration_hits_target_ratio(name, ratio):
    policy = make_policy(name, seed=3)
    valid, test = synthetic_inputs(3000, seed=1), synthetic_inputs(3000, seed=2)
    th = policy.calibrate(valid, ratio)
    realised = policy.decide(test, th).mean()
    if name == "always":
        assert realised == 1.0
    elif name == "never":
        assert realised == 0.0
    else:
        assert abs(realised - ratio) <= 0.02, (name, ratio, realised)


def test_lsc4rec_score_hand_computed():
    x = PolicyInputs(srm_scores=np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]), llm_rank=np.array([[1, 2, 3], [1, 2, 3]]),
                     history_len=np.array([50, 40]), max_len=50, user=np.zeros((2, 1)),
                     recent_emb=np.zeros((2, 1, 1)), cand_emb=np.zeros((2, 3, 1)), cached_mass=np.ones(2))
    s = make_policy("lsc4rec").score(x)
    assert s[0] == pytest.approx(0 + 4.0**2)  # same order, no padding
    assert s[1] == pytest.approx((2 + 0 + 2) / 3 + (4 + 0.3 * 10) ** 2)  # reversed order, 10 padded slots


def test_intellectreq_is_more_uncertain_for_scattered_behaviour():
    x = synthetic_inputs(400, seed=5)
    x.recent_emb[:200] *= 0.01  # focused recent behaviour
    s = make_policy("intellectreq").score(x)
    assert s[:200].mean() < s[200:].mean()


def test_unknown_policy():
    with pytest.raises(ValueError, match="known policies are"):
        make_policy("sometimes")


def test_coverage_prefers_users_the_cache_does_not_cover():
    x = synthetic_inputs(100, seed=9)
    x.cached_mass[:] = 0.8
    x.cached_mass[:10] = 0.01
    policy = make_policy("coverage")
    ask = policy.decide(x, policy.calibrate(x, 0.1))
    assert ask[:10].all() and not ask[10:].any()


def test_selfeval_requests_where_the_llm_doubts_its_list():
    from srm_device.scoring import llm_mass

    scores = np.log(np.array([[0.5, 0.3, 0.1], [0.01, 0.01, 0.01]]))  # covers 0.9 vs 0.03 of the LLM's mass
    mass = llm_mass(scores)
    assert mass == pytest.approx([0.9, 0.03])
    x = synthetic_inputs(2, seed=0)
    x.llm_mass = mass
    policy = make_policy("selfeval")
    assert list(policy.score(x)) == pytest.approx([-np.log(0.9), -np.log(0.03)])
    th = policy.calibrate(x, 0.5)
    assert list(policy.decide(x, th)) == [False, True]
    x.llm_mass = None
    with pytest.raises(ValueError, match="needs llm_mass"):
        policy.score(x)


def test_ece_and_selfeval_report_by_hand():
    from eval.calibration import ece
    from eval.selfeval import selfeval_report

    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0, 0, 1, 1])
    assert ece(p, y) == pytest.approx(0.05)  # two bins, each off by 0.05
    assert ece(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    mass = rng.uniform(0.01, 0.3, 4000)
    hit = rng.uniform(size=4000) < np.sqrt(mass)  # more mass, more hits, but the raw mass is under-confident
    rep = selfeval_report(mass[:2000], hit[:2000], mass[2000:], hit[2000:])
    assert rep["auroc"] > 0.6 and rep["ece_calibrated"] < 0.5 * rep["ece_raw"]
