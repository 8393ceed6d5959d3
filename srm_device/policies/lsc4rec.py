"""LSC4Rec's request rule (Lv et al. 2025, arXiv 2502.08667): request when the device and the cloud disagree.

    S = mean_i |rank_SRM(i) − rank_LLM(i)| + (4 + 0.3·#padded)²

over the cached candidates i, where rank_SRM ranks them by the SRM's fresh scores and rank_LLM is the cached order, and
#padded is how many of the SRM's ``max_len`` input slots are padding (short histories are less trustworthy on the
device). Request when S ≥ τ; τ comes from the target ratio.
"""

from __future__ import annotations

import numpy as np

from srm_device.policies.base import PolicyInputs, RequestPolicy, register


@register
class LSC4Rec(RequestPolicy):
    name = "lsc4rec"

    def score(self, x: PolicyInputs) -> np.ndarray:
        order = np.argsort(-x.srm_scores, axis=1, kind="stable")  # (u, c)
        srm_rank = np.empty_like(order)
        np.put_along_axis(srm_rank, order, np.arange(1, order.shape[1] + 1)[None].repeat(len(order), 0), axis=1)
        disagreement = np.abs(srm_rank - x.llm_rank).mean(axis=1)  # (u,)
        padded = np.clip(x.max_len - x.history_len, 0, None)  # (u,)
        return disagreement + (4.0 + 0.3 * padded) ** 2
