"""Generalised task arithmetic (arXiv 2212.04089): TIES (arXiv 2306.01708) and DARE (arXiv 2311.03099) are
configured instances of it, as in mergekit.

    deltas τ_i = θ_i − base (or the inputs themselves when ``ctx.base is None``: LoRA ΔW)
    → sparsify each τ_i: none | magnitude (keep the top-``density`` |τ|) | random (DARE drop, rescaled by 1/density)
    → sign election + disjoint (weighted) mean, or a weighted sum
    → × ``scale`` (λ) → + base
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

import torch

from merging.methods.base import MergeContext, MergeMethod, register
from merging.tensors import disjoint_mean, elect_sign, magnitude_prune, random_drop, weighted_sum

SPARSIFY = ("none", "magnitude", "random")


@register
class TaskArithmetic(MergeMethod):
    """Params: ``sparsify`` ("none"), ``density`` (1.0), ``rescale`` (True: DARE's 1/density), ``sign_election``
    (False), ``scale`` λ (1.0), ``seed`` (0: the random drop of a parameter is seeded by seed and ``ctx.name``)."""

    name = "task_arithmetic"
    defaults: ClassVar[dict[str, Any]] = {"sparsify": "none", "density": 1.0, "rescale": True,
                                          "sign_election": False, "scale": 1.0, "seed": 0}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name} has no parameter {', '.join(unknown)}; its parameters are "
                             f"{', '.join(self.defaults)}")
        merged = {**self.defaults, **params}
        if merged["sparsify"] not in SPARSIFY:
            raise ValueError(f"{self.name}: sparsify must be one of {', '.join(SPARSIFY)}, got {merged['sparsify']!r}")
        if not 0.0 < float(merged["density"]) <= 1.0:
            raise ValueError(f"{self.name}: density must be in (0, 1], got {merged['density']}")
        super().__init__(**merged)

    def merge(self, tensors: list[torch.Tensor], weights: list[float], ctx: MergeContext) -> torch.Tensor:
        p = self.params
        deltas = [t - ctx.base for t in tensors] if ctx.base is not None else list(tensors)
        if p["sparsify"] == "magnitude":
            deltas = [magnitude_prune(d, p["density"]) for d in deltas]
        elif p["sparsify"] == "random":
            gen = torch.Generator(device=deltas[0].device)
            gen.manual_seed(int(p["seed"]) * 1_000_003 + zlib.crc32(ctx.name.encode()))
            deltas = [random_drop(d, p["density"], gen, rescale=p["rescale"]) for d in deltas]
        stack = torch.stack(deltas)  # (m, *shape)
        if p["sign_election"]:
            # elect on the weighted deltas (PEFT's and mergekit's choice), then a weighted mean of the agreeing ones
            signs = elect_sign(stack * torch.tensor(weights, dtype=stack.dtype, device=stack.device).reshape(
                -1, *([1] * (stack.dim() - 1))))  # (*shape)
            merged = disjoint_mean(stack, signs, weights)  # (*shape)
        else:
            merged = weighted_sum(stack, weights)  # (*shape)
        merged = p["scale"] * merged
        return merged + ctx.base if ctx.base is not None else merged
