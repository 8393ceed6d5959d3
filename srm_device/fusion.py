"""Score fusion of the cloud's candidate order with the device SRM (LSC4Rec, Lv et al. 2025, arXiv 2502.08667).

For a candidate at LLM rank j of N (1-based), with p = σ(a·x + b) the calibrated probability from the SRM logit x:

    llm    s = −j
    gated  s = 0.5 − j/N + (p − 0.5)·1[|p − 0.5| > 0.4]
    sum    s = −j/N + (p − 0.5)
    sum2   s = −j/N + 2(p − 0.5)
    srm    s = p
    learned (ours)  s = α·logit(p_llm) + (1 − α)·logit(p)

LSC4Rec's SRM outputs probabilities directly. Ours is trained with cross-entropy over all items, so its raw logits are
not probabilities (σ of them saturates near 1). We therefore Platt-scale them, p = σ(a·x + b), with (a, b) fitted on
validation candidates (label: is this the target). ``learned`` also Platt-scales the cloud's own score into p_llm and
picks α on validation. The fitting is offline (``eval/``); the device only applies the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Platt:
    """p = σ(a·x + b)."""

    a: float = 1.0
    b: float = 0.0

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.a * np.asarray(x, dtype=np.float64) + self.b

    def prob(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(x)))


@dataclass
class FusionParams:
    """Everything a fusion rule needs besides the scores; fitted on validation."""

    srm: Platt = field(default_factory=Platt)
    llm: Platt = field(default_factory=Platt)
    alpha: float = 0.5


@dataclass
class FusionInputs:
    llm_rank: np.ndarray  # (u, c) 1-based position in the cloud's list
    llm_score: np.ndarray  # (u, c) the cloud's score (e.g. log-probability)
    srm_logit: np.ndarray  # (u, c) device SRM score

    @property
    def n(self) -> int:
        return self.llm_rank.shape[1]


FusionRule = Callable[[FusionInputs, FusionParams], np.ndarray]
FUSION_RULES: dict[str, FusionRule] = {}


def register(name: str) -> Callable[[FusionRule], FusionRule]:
    def deco(fn: FusionRule) -> FusionRule:
        FUSION_RULES[name] = fn
        return fn

    return deco


@register("llm")
def fuse_llm(x: FusionInputs, prm: FusionParams) -> np.ndarray:
    return -x.llm_rank.astype(np.float64)


@register("gated")
def fuse_gated(x: FusionInputs, prm: FusionParams) -> np.ndarray:
    p = prm.srm.prob(x.srm_logit)
    return 0.5 - x.llm_rank / x.n + (p - 0.5) * (np.abs(p - 0.5) > 0.4)


@register("sum")
def fuse_sum(x: FusionInputs, prm: FusionParams) -> np.ndarray:
    return -x.llm_rank / x.n + (prm.srm.prob(x.srm_logit) - 0.5)


@register("sum2")
def fuse_sum2(x: FusionInputs, prm: FusionParams) -> np.ndarray:
    return -x.llm_rank / x.n + 2.0 * (prm.srm.prob(x.srm_logit) - 0.5)


@register("srm")
def fuse_srm(x: FusionInputs, prm: FusionParams) -> np.ndarray:
    return prm.srm.prob(x.srm_logit)


@register("learned")
def fuse_learned(x: FusionInputs, prm: FusionParams) -> np.ndarray:
    return prm.alpha * prm.llm.logit(x.llm_score) + (1.0 - prm.alpha) * prm.srm.logit(x.srm_logit)


def fuse(rule: str, x: FusionInputs, prm: FusionParams) -> np.ndarray:
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; known rules are {', '.join(FUSION_RULES)}")
    return FUSION_RULES[rule](x, prm)
