"""Probability calibration shared by the fusion fit (:mod:`eval.device`) and the LLM self-evaluation report
(:mod:`eval.selfeval`): a Platt map fitted by logistic regression, and the expected calibration error."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from srm_device.fusion import Platt

BINS = 10


def fit_platt(x: np.ndarray, y: np.ndarray) -> Platt:
    """``p = σ(a·x + b)`` fitted to binary labels ``y`` (barely regularised: C = 1e4)."""
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(x).reshape(-1, 1), np.asarray(y).reshape(-1))
    return Platt(float(lr.coef_[0, 0]), float(lr.intercept_[0]))


def ece(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: Σ_b (n_b / n)·|mean(y_b) − mean(p_b)| over equal-width probability bins."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)  # (n,)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(total)
