"""CKI: compatibility-aware knowledge integration (arXiv 2501.07596) — splice two models element by element.

For models i and j and one parameter:
    global  w_glob = (0.4/π)·arctan(500·(H(θ_i) − H(θ_j))) + 0.5, H = entropy of a 10-bin histogram of the values;
    local   w_loc  = σ(Linear(features(θ_i, θ_j))) elementwise (:func:`merging.tensors.compat_features`);
    splice  w = w_glob·w_loc + (1 − w_glob),  θ = w⊙θ_i + (1 − w)⊙θ_j.

Local compatibility, data-free (default): the untrained :class:`LocalCompat`, ``σ(gain·(|θ_i| − |θ_j|)/s)`` — the
larger-magnitude element wins (see :func:`merging.tensors.data_free_local`). Learned: :func:`fit_local_compat`
trains a LocalCompat on calibration data with the models frozen; pass it as ``ctx.extra["local_compat"]`` (or the
``local_compat`` param) and it is used for every parameter (its inputs are scale-free, so one layer serves all).

Options for task vectors (LoRA ΔW merged from one base; measured in ``bench/merge_eval.py``):
``global_term=False`` drops w_glob (w = w_loc). Its arctan(500·ΔH) saturates at entropy gaps of a few hundredths of
a nat, which separates full models but, on two LoRA updates of similar spread, turns noise into a hard 0.3/0.7
preference for one expert in every module. ``rescale=True`` keeps the winner's magnitude
(:func:`merging.tensors.splice`). Both default to the paper's rule.

More than two models: a sequential fold. Models are ordered by weight, heaviest first (stable: ties keep the input
order); the heaviest is the anchor, and each next model j is spliced into the running merge m as
``m ← splice(i=m, j=θ_j)``. The splice is asymmetric (w ≥ 1 − w_glob ≥ 0.3, so i always keeps ≥ 30% of itself),
so the anchor — the model the caller trusts most — stays the backbone, and each later model contributes where the
compatibility terms favour it. For two models the heavier one is i. Weights only set this order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from merging.methods.base import MergeContext, MergeMethod, register
from merging.tensors import cki_global, compat_features, histogram_entropy, splice


class LocalCompat(nn.Module):
    """``w_loc = σ(Linear(features))`` on the 2 elementwise features of :func:`compat_features`; initialised to the
    data-free rule (weight ``(0, gain)``, bias 0)."""

    def __init__(self, gain: float = 4.0) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.0, gain]]))
            self.linear.bias.zero_()

    def forward(self, theta_i: torch.Tensor, theta_j: torch.Tensor) -> torch.Tensor:
        feats = compat_features(theta_i, theta_j).to(self.linear.weight.dtype)  # (*shape, 2)
        return torch.sigmoid(self.linear(feats)).squeeze(-1).to(theta_i.dtype)  # (*shape)


def cki_splice(theta_i: torch.Tensor, theta_j: torch.Tensor, compat: LocalCompat, bins: int = 10,
               global_term: bool = True, rescale: bool = False) -> torch.Tensor:
    """One CKI splice of two same-shaped tensors; differentiable in ``compat``'s parameters."""
    w_glob = cki_global(histogram_entropy(theta_i, bins), histogram_entropy(theta_j, bins)) if global_term else 1.0
    return splice(theta_i, theta_j, w_glob, compat(theta_i, theta_j), rescale=rescale)


def fit_local_compat(loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
                     pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], steps: int = 50, lr: float = 0.05,
                     compat: LocalCompat | None = None, bins: int = 10, global_term: bool = True,
                     rescale: bool = False) -> LocalCompat:
    """Train a :class:`LocalCompat` for ``steps`` Adam steps so that ``loss_fn(spliced)`` falls, where ``spliced[k]``
    is the CKI splice of ``pairs[k] = (θ_i, θ_j)``; the model tensors are frozen (detached). ``loss_fn`` evaluates the
    spliced parameters on the caller's calibration data (e.g. a SASRec loss via ``torch.func.functional_call``, or a
    LoRA ΔW's output error)."""
    compat = compat if compat is not None else LocalCompat()
    frozen = [(a.detach(), b.detach()) for a, b in pairs]
    opt = torch.optim.Adam(compat.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn([cki_splice(a, b, compat, bins, global_term, rescale) for a, b in frozen])
        loss.backward()
        opt.step()
    return compat.eval()


@register
class CKI(MergeMethod):
    """Params: ``gain`` (4.0, data-free sharpness), ``bins`` (10), ``global_term`` (True), ``rescale`` (False),
    ``local_compat`` (a trained LocalCompat; else ``ctx.extra["local_compat"]``; else the data-free rule)."""

    name = "cki"

    def __init__(self, gain: float = 4.0, bins: int = 10, global_term: bool = True, rescale: bool = False,
                 local_compat: LocalCompat | None = None) -> None:
        super().__init__(gain=gain, bins=bins, global_term=global_term, rescale=rescale, local_compat=local_compat)
        self.bins, self.global_term, self.rescale = bins, bool(global_term), bool(rescale)
        self.compat = local_compat if local_compat is not None else LocalCompat(gain)

    def merge(self, tensors: list[torch.Tensor], weights: list[float], ctx: MergeContext) -> torch.Tensor:
        if len(weights) != len(tensors):
            raise ValueError(f"cki got {len(weights)} weights for {len(tensors)} models; pass one weight per model")
        compat = ctx.extra.get("local_compat", self.compat)
        order = sorted(range(len(tensors)), key=lambda k: -weights[k])  # heaviest first, stable
        merged = tensors[order[0]]
        with torch.no_grad():
            for k in order[1:]:
                merged = cki_splice(merged, tensors[k], compat, self.bins, self.global_term, self.rescale)  # (*shape)
        return merged
