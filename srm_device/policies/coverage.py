"""``coverage`` (ours): request when the device SRM expects the next item to lie outside the cached list.

The device holds the whole item-embedding table, so it can compute its own next-item distribution over the catalogue
(softmax of the SRM scores) and the probability mass that the cached candidates cover. The score is −log(mass): a user
whose behaviour has drifted away from the cached list asks for a fresh one first. It needs one matrix-vector product
over the catalogue (1,682 × 64 on ML-100K), no sampling and no training.
"""

from __future__ import annotations

import numpy as np

from srm_device.policies.base import PolicyInputs, RequestPolicy, register


@register
class Coverage(RequestPolicy):
    name = "coverage"

    def score(self, x: PolicyInputs) -> np.ndarray:
        return -np.log(np.clip(x.cached_mass, 1e-12, 1.0))
