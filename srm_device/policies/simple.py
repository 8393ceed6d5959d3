"""Baseline policies: ``always``, ``never`` and ``random``."""

from __future__ import annotations

import numpy as np

from srm_device.policies.base import PolicyInputs, RequestPolicy, Threshold, register


@register
class Always(RequestPolicy):
    name = "always"

    def score(self, x: PolicyInputs) -> np.ndarray:
        return np.ones(len(x))

    def calibrate(self, x: PolicyInputs, ratio: float) -> Threshold:
        return Threshold(-np.inf, 0.0, 1.0)


@register
class Never(RequestPolicy):
    name = "never"

    def score(self, x: PolicyInputs) -> np.ndarray:
        return np.zeros(len(x))

    def calibrate(self, x: PolicyInputs, ratio: float) -> Threshold:
        return Threshold(np.inf, 0.0, 0.0)


@register
class Random(RequestPolicy):
    """Request with probability p = the target ratio, whatever the state."""

    name = "random"

    def score(self, x: PolicyInputs) -> np.ndarray:
        return np.random.default_rng(self.seed + 1).random(len(x))

    def calibrate(self, x: PolicyInputs, ratio: float) -> Threshold:
        return Threshold(1.0 - ratio, 0.0, ratio)  # uniform scores: P(s > 1 - p) = p
