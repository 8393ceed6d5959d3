"""How well the cloud LLM judges its own candidate lists (issue 8; Cas-SEAT arXiv 2501.05662, AdaPO arXiv
2508.09155 applied to the recommender).

The self-evaluation of a list is the LLM's own probability that it holds the user's next item,
``Σ_j exp(sequence log-prob_j)`` (:func:`srm_device.scoring.llm_mass`). Fitted on validation users: a Platt map on
``log(mass)``. Reported on test users: AUROC of the raw mass against "the target is in the list" (calibration does not
change it), and the expected calibration error (10 equal-width bins, weighted by bin size) of the raw mass and of the
calibrated probability.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from eval.calibration import ece, fit_platt
from srm_device.fusion import Platt


def _feature(mass: np.ndarray) -> np.ndarray:
    return np.log(np.clip(mass, 1e-12, 1.0)).reshape(-1, 1)


def fit_selfeval(mass: np.ndarray, hit: np.ndarray) -> Platt:
    """Platt map of log(mass) to P(hit), fitted on validation lists."""
    if hit.min() == hit.max():
        return Platt(0.0, float(np.log((hit.mean() + 1e-6) / (1 - hit.mean() + 1e-6))))
    return fit_platt(_feature(mass), hit.astype(int))


def selfeval_report(valid_mass: np.ndarray, valid_hit: np.ndarray, test_mass: np.ndarray,
                    test_hit: np.ndarray) -> dict:
    """Calibrate on validation, measure on test (see the module doc)."""
    platt = fit_selfeval(valid_mass, valid_hit)
    calibrated = platt.prob(_feature(test_mass)[:, 0])
    one_class = test_hit.min() == test_hit.max()
    return {
        "definition": "self-evaluation = sum of exp(sequence log-prob) over the list; label = target in the list",
        "hit_rate_test": float(test_hit.mean()),
        "mean_mass_test": float(test_mass.mean()),
        "auroc": None if one_class else float(roc_auc_score(test_hit, test_mass)),
        "ece_raw": ece(test_mass, test_hit),
        "ece_calibrated": ece(calibrated, test_hit),
        "platt": [platt.a, platt.b],
        "n_valid": int(len(valid_hit)), "n_test": int(len(test_hit)),
    }
