"""Small typed pure tensor functions that the merge methods are composed of (the layout of PEFT's ``merge_utils``).

``stack`` arguments hold one tensor per model along dimension 0: ``(m, *shape)``. Nothing here mutates its inputs.

- sparsification: :func:`magnitude_prune` (TIES, arXiv 2306.01708), :func:`random_drop` (DARE, arXiv 2311.03099);
- TIES sign election and disjoint merge: :func:`elect_sign`, :func:`disjoint_mean`;
- CKI compatibility (arXiv 2501.07596): :func:`histogram_entropy`, :func:`cki_global`, :func:`splice`;
- activation-level domain compatibility (CAPS, arXiv 2506.23940): :func:`linear_cka` (Kornblith et al., arXiv
  1905.00414).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1] (the fraction of entries kept), got {density}")


def magnitude_prune(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``round(density·numel)`` entries of largest ``|x|`` (at least one), zero the rest (TIES's trim)."""
    _check_density(density)
    k = max(1, round(density * t.numel()))
    if k >= t.numel():
        return t.clone()
    flat = t.reshape(-1)  # (n,)
    keep = torch.zeros_like(flat, dtype=torch.bool)  # (n,)
    keep[flat.abs().topk(k).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).reshape(t.shape)


def random_drop(t: torch.Tensor, density: float, generator: torch.Generator | None = None,
                rescale: bool = True) -> torch.Tensor:
    """DARE: keep each entry with probability ``density``; with ``rescale`` divide the kept ones by ``density`` so
    ``E[random_drop(t)] = t``."""
    _check_density(density)
    keep = torch.rand(t.shape, generator=generator, device=t.device) < density  # (*shape)
    out = torch.where(keep, t, torch.zeros_like(t))
    return out / density if rescale else out


def elect_sign(stack: torch.Tensor) -> torch.Tensor:
    """TIES sign election, ``(m, *shape) -> (*shape)``: the sign whose models carry the larger total magnitude,
    i.e. ``sign(Σ_m x_m)``; a tie (sum 0) elects +1."""
    total = stack.sum(dim=0)  # (*shape)
    return torch.where(total >= 0, torch.ones_like(total), -torch.ones_like(total))


def disjoint_mean(stack: torch.Tensor, signs: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """TIES disjoint merge, ``(m, *shape), (*shape) -> (*shape)``: per element, the (``weights``-weighted) mean over
    the models whose non-zero entry agrees with ``signs``; 0 where none agrees."""
    w = _weights_like(stack, weights)  # (m, 1, ..., 1)
    agree = (torch.sign(stack) == signs.unsqueeze(0)) & (stack != 0)  # (m, *shape)
    wm = w * agree  # (m, *shape)
    num = (wm * stack).sum(dim=0)  # (*shape)
    den = wm.sum(dim=0)  # (*shape)
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


def weighted_sum(stack: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """``Σ_m w_m x_m``, ``(m, *shape) -> (*shape)``."""
    return (_weights_like(stack, weights) * stack).sum(dim=0)


def _weights_like(stack: torch.Tensor, weights: Sequence[float] | None) -> torch.Tensor:
    m = stack.shape[0]
    if weights is None:
        weights = [1.0] * m
    if len(weights) != m:
        raise ValueError(f"got {len(weights)} weights for {m} models; pass one weight per model")
    return torch.tensor(list(weights), dtype=stack.dtype, device=stack.device).reshape(m, *([1] * (stack.dim() - 1)))


def histogram_entropy(t: torch.Tensor, bins: int = 10) -> float:
    """Shannon entropy (nats) of a ``bins``-bin histogram of the values of ``t`` over ``[min, max]``; 0 for a
    constant tensor, at most ``ln(bins)``."""
    x = t.detach().float().reshape(-1)  # (n,)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return 0.0
    counts = torch.histc(x, bins=bins, min=lo, max=hi)  # (bins,)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def cki_global(h_i: float, h_j: float) -> float:
    """CKI global compatibility ``w_glob = (0.4/π)·arctan(500·(H_i − H_j)) + 0.5`` of two entropies
    (:func:`histogram_entropy`). It is 0.5 at ``H_i = H_j``; as ``arctan`` saturates at ±π/2 it lies in (0.3, 0.7),
    reaching within 0.01 of the bounds once ``|H_i − H_j| ≳ 0.026`` nats."""
    return 0.4 / math.pi * math.atan(500.0 * (h_i - h_j)) + 0.5


def compat_features(theta_i: torch.Tensor, theta_j: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Elementwise inputs of CKI's local compatibility, ``(*shape), (*shape) -> (*shape, 2)``:
    ``(|θ_i − θ_j|, |θ_i| − |θ_j|) / s`` with ``s = mean|θ_i − θ_j|``, so one small Linear applies to parameters of
    any scale (a Linear on ``|θ_i − θ_j|`` alone is symmetric in i and j and could not prefer either side)."""
    diff = (theta_i - theta_j).abs()  # (*shape)
    scale = diff.mean().clamp_min(eps)
    return torch.stack([diff / scale, (theta_i.abs() - theta_j.abs()) / scale], dim=-1)  # (*shape, 2)


def data_free_local(theta_i: torch.Tensor, theta_j: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """Data-free CKI local compatibility ``w_loc = σ(gain·(|θ_i| − |θ_j|)/s)``, ``s = mean|θ_i − θ_j|``: → 1 where
    θ_i's entry is clearly larger in magnitude, → 0 where θ_j's is, 0.5 (an average) where they are alike. Larger
    magnitude as the proxy for "carries more knowledge" is TIES's and magnitude pruning's assumption."""
    return torch.sigmoid(gain * compat_features(theta_i, theta_j)[..., 1])  # (*shape)


def splice(theta_i: torch.Tensor, theta_j: torch.Tensor, w_glob: float | torch.Tensor,
           w_loc: torch.Tensor, rescale: bool = False) -> torch.Tensor:
    """CKI splice: ``w = w_glob·w_loc + (1 − w_glob)``, then ``θ = w⊙θ_i + (1 − w)⊙θ_j`` (all ``(*shape)``).

    ``rescale`` (ours, for task vectors): divide by ``max(w, 1 − w)``, so the element's winner keeps its full value
    and the loser is added at the ratio of the weights — ``θ_i`` where ``w = 1``, ``θ_i + θ_j`` (task arithmetic) where
    ``w = ½``. CKI interpolates full models; interpolating *updates* of a shared base shrinks every update the splice
    does not give entirely to one side, the known weakness of averaging task vectors. DARE's 1/density rescale is the
    same idea."""
    w = w_glob * w_loc + (1.0 - w_glob)  # (*shape)
    out = w * theta_i + (1.0 - w) * theta_j  # (*shape)
    return out / torch.maximum(w, 1.0 - w) if rescale else out


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between activations ``x (n, d1)`` and ``y (n, d2)`` of the same ``n`` inputs (arXiv 1905.00414):
    ``‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` on column-centred activations; 1 for ``x = y``, invariant to orthogonal
    transforms and isotropic scaling of either side; 0 when either side is constant."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, d1) and (n, d2) activations of the same n inputs, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(dim=0, keepdim=True)  # (n, d1)
    y = y.double() - y.double().mean(dim=0, keepdim=True)  # (n, d2)
    cross = (y.T @ x).pow(2).sum()  # ‖Yᵀ X‖²_F
    den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / den) if float(den) > 0 else 0.0
