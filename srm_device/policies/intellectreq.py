"""IntellectReq's uncertainty-driven requests (Lv et al., WWW 2024, arXiv 2311.04049), in a training-free form.

The device maps its recent behaviour to a Gaussian over user states: mean = the SRM user representation u, and per
dimension standard deviation = the spread of the recent items' embeddings (times ``scale``). It draws M samples,
ranks the cached candidates under each, and measures how unstable the top-K is: 1 − mean overlap of each sample's
top-K with the top-K under u. Users whose recent behaviour is scattered, so that the device's prediction is fragile,
ask the cloud first. (IntellectReq learns the mapping; here it is fixed, so nothing is trained on the device.)
"""

from __future__ import annotations

import numpy as np

from srm_device.policies.base import PolicyInputs, RequestPolicy, register


@register
class IntellectReq(RequestPolicy):
    name = "intellectreq"

    def __init__(self, seed: int = 0, samples: int = 16, top_k: int = 10, scale: float = 0.5) -> None:
        super().__init__(seed)
        self.samples, self.top_k, self.scale = samples, top_k, scale

    def score(self, x: PolicyInputs) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 7)
        real = (np.abs(x.recent_emb).sum(-1) > 0)[..., None]  # (u, k, 1) non-padding
        count = np.maximum(real.sum(1), 1)  # (u, 1)
        mean = (x.recent_emb * real).sum(1) / count  # (u, d)
        var = (((x.recent_emb - mean[:, None]) ** 2) * real).sum(1) / count  # (u, d)
        sigma = self.scale * np.sqrt(var)  # (u, d)
        k = min(self.top_k, x.cand_emb.shape[1])
        base_top = np.argsort(-np.einsum("ud,ucd->uc", x.user, x.cand_emb), axis=1)[:, :k]  # (u, k)
        base_mask = np.zeros(x.cand_emb.shape[:2], dtype=bool)  # (u, c)
        np.put_along_axis(base_mask, base_top, True, axis=1)
        overlap = np.zeros(len(x))
        for _ in range(self.samples):
            z = x.user + sigma * rng.standard_normal(x.user.shape)  # (u, d)
            top = np.argsort(-np.einsum("ud,ucd->uc", z, x.cand_emb), axis=1)[:, :k]  # (u, k)
            overlap += np.take_along_axis(base_mask, top, axis=1).mean(1)
        return 1.0 - overlap / self.samples  # (u,) in [0, 1]
