"""``selfeval`` (issue 8; the recommender's use of self-evaluation, Cas-SEAT arXiv 2501.05662 / AdaPO arXiv
2508.09155): request when the cloud LLM itself doubts the cached list.

The LLM's self-evaluation of a candidate list is its own probability that the list holds the user's next item:
the generative recommender scores each candidate by its sequence log-probability under trie-constrained decoding, so
``Σ_j exp(score_j)`` is the mass of its next-item distribution that the list covers (``PolicyInputs.llm_mass``; the
device computes it from the scores it already caches, nothing extra on the wire). A list the LLM was unsure about
when it wrote it — spread thinly over many items — is the one to refresh first. The score is −log(mass); the
threshold is set by percentile for a target request ratio like every policy, so calibration (reported separately by
``eval/selfeval.py`` as ECE and AUROC) does not change its decisions.
"""

from __future__ import annotations

import numpy as np

from srm_device.policies.base import PolicyInputs, RequestPolicy, register


@register
class SelfEval(RequestPolicy):
    name = "selfeval"

    def score(self, x: PolicyInputs) -> np.ndarray:
        if x.llm_mass is None:
            raise ValueError("the selfeval policy needs llm_mass (the cached list's LLM scores); pass cached_scores "
                             "to policy_inputs")
        return -np.log(np.clip(x.llm_mass, 1e-12, 1.0))
