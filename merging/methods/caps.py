"""CAPS (Graft, arXiv 2506.23940): CKI-style splicing of LoRA experts, module by module, steered by local
functional attribution, plus an activation-level compatibility report (linear CKA) that decides what to splice.

Per module (``tensors`` = each expert's ΔW, ``ctx.attribution`` = each expert's importance of the same shape,
e.g. |gradient × weight| or activation importance computed on calibration data):
    â_k   = |A_k| / mean|A_k|            (normalised per expert, so experts' attribution scales are comparable)
    w_loc = â_i / (â_i + â_j)            (0.5 where both are 0)
    w     = w_glob·w_loc + (1 − w_glob)   with CKI's entropy-based w_glob (``global_term=False``: w = w_loc)
    ΔW    = w⊙ΔW_i + (1 − w)⊙ΔW_j
More than two experts fold as in CKI (heaviest weight first); the running merge's attribution is spliced with the
same w, so it follows the elements it kept.

Splice rule (``cka_threshold``): a module is spliced only if its activation CKA between the experts
(``ctx.extra["cka"]``: the lowest pairwise value from :func:`compatibility_report`) is at least the threshold;
otherwise it is a weight-averaged linear merge. Element-wise splicing assumes that element k plays a comparable role
in both experts, which is what similar activations (high CKA) indicate; where the experts' representations
disagree, their attributions are not comparable and averaging (each expert's update kept at its weight) is the
safer fallback. The default threshold 0 splices every module (CKA is non-negative).
"""

from __future__ import annotations

import itertools

import torch

from merging.methods.base import MergeContext, MergeMethod, register
from merging.tensors import cki_global, histogram_entropy, linear_cka, splice, weighted_sum


def compatibility_report(acts_by_model: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """``{model: {module: activations (n, d)}}`` on the same calibration inputs → ``{module: {"a|b": CKA}}`` for
    every pair of models and every module all of them share."""
    names = list(acts_by_model)
    modules = [m for m in acts_by_model[names[0]] if all(m in acts_by_model[n] for n in names)]
    return {m: {f"{a}|{b}": linear_cka(acts_by_model[a][m], acts_by_model[b][m])
                for a, b in itertools.combinations(names, 2)} for m in modules}


def module_cka(report: dict[str, dict[str, float]], module: str) -> float:
    """The lowest pairwise CKA of ``module`` in a :func:`compatibility_report` (1.0 with fewer than two models)."""
    return min(report[module].values(), default=1.0)


def attribution_local(a_i: torch.Tensor, a_j: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``w_loc = â_i / (â_i + â_j)`` with ``â = |A| / mean|A|``; 0.5 where both are 0."""
    n_i = a_i.abs() / a_i.abs().mean().clamp_min(eps)  # (*shape)
    n_j = a_j.abs() / a_j.abs().mean().clamp_min(eps)  # (*shape)
    den = n_i + n_j
    return torch.where(den > 0, n_i / den.clamp_min(eps), torch.full_like(den, 0.5))


@register
class CAPS(MergeMethod):
    """Params: ``cka_threshold`` (0.0), ``global_term`` (True), ``rescale`` (False; see
    :func:`merging.tensors.splice`), ``bins`` (10)."""

    name = "caps"

    def __init__(self, cka_threshold: float = 0.0, global_term: bool = True, rescale: bool = False,
                 bins: int = 10) -> None:
        super().__init__(cka_threshold=cka_threshold, global_term=global_term, rescale=rescale, bins=bins)
        self.cka_threshold, self.global_term, self.rescale, self.bins = cka_threshold, global_term, rescale, bins

    def merge(self, tensors: list[torch.Tensor], weights: list[float], ctx: MergeContext) -> torch.Tensor:
        if len(weights) != len(tensors):
            raise ValueError(f"caps got {len(weights)} weights for {len(tensors)} models; pass one weight per model")
        cka = ctx.extra.get("cka")
        if cka is not None and float(cka) < self.cka_threshold:
            return weighted_sum(torch.stack(tensors), weights) / sum(weights)  # (*shape)
        if ctx.attribution is None or len(ctx.attribution) != len(tensors):
            raise ValueError(f"caps needs ctx.attribution with one importance tensor per model for "
                             f"{ctx.name or 'this parameter'}, got "
                             f"{'none' if ctx.attribution is None else len(ctx.attribution)} for {len(tensors)} "
                             f"models; compute attribution on calibration data first")
        order = sorted(range(len(tensors)), key=lambda k: -weights[k])  # heaviest first, stable
        merged, attr = tensors[order[0]], ctx.attribution[order[0]]
        for k in order[1:]:
            w_loc = attribution_local(attr, ctx.attribution[k])  # (*shape)
            w_glob = (cki_global(histogram_entropy(merged, self.bins), histogram_entropy(tensors[k], self.bins))
                      if self.global_term else 1.0)
            merged = splice(merged, tensors[k], w_glob, w_loc, rescale=self.rescale)  # (*shape)
            attr = splice(attr.abs(), ctx.attribution[k].abs(), w_glob, w_loc, rescale=self.rescale)  # (*shape)
        return merged
