"""Linear merge: the weighted average ``Σ w_i θ_i / Σ w_i`` (model soups, arXiv 2203.05482)."""

from __future__ import annotations

import torch

from merging.methods.base import MergeContext, MergeMethod, register
from merging.tensors import weighted_sum


@register
class Linear(MergeMethod):
    """Params: ``normalize`` (default True) divides by ``Σ w_i``; False gives the plain weighted sum.

    Works on full weights and on deltas alike (``ctx.base`` is not used: an average of full weights equals base plus
    the average of their deltas when the weights sum to 1)."""

    name = "linear"

    def __init__(self, normalize: bool = True) -> None:
        super().__init__(normalize=normalize)
        self.normalize = normalize

    def merge(self, tensors: list[torch.Tensor], weights: list[float], ctx: MergeContext) -> torch.Tensor:
        stack = torch.stack(tensors)  # (m, *shape)
        out = weighted_sum(stack, weights)  # (*shape)
        if self.normalize:
            total = sum(weights)
            if total == 0:
                raise ValueError(f"linear merge of {ctx.name or 'a parameter'}: the weights {weights} sum to 0; "
                                 f"pass weights with a non-zero sum or normalize=False")
            out = out / total
        return out
