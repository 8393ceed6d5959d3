"""Generated head parameters and how the device applies them (DUET, WWW 2023, arXiv 2302.04397).

The cloud hypernetwork does not send a whole model. It sends a low-rank edit of the SRM's head, which acts on the
user representation ``u`` (the SRM's hidden state at the last item) before it is scored against the item embeddings:

    u' = u + (u · B) · Aᵀ + b        A, B: (d, r), b: (d,)
    score(i) = u' · e_i

With zero parameters this is exactly the static SRM, so a device without an update (or with a rejected one) falls back
to the trained model. Parameters of the wrong shape or with non-finite values are rejected, not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class HeadShapeError(ValueError):
    """Generated parameters that do not fit this device's SRM."""


@dataclass(frozen=True)
class HeadSpec:
    """What the hypernetwork must generate for one SRM: width ``d`` and delta rank ``r``."""

    hidden_size: int
    rank: int

    @property
    def n_params(self) -> int:
        return 2 * self.hidden_size * self.rank + self.hidden_size

    @property
    def full_params(self) -> int:
        """Parameters of a full (not low-rank) head W (d, d) and b (d,), for byte comparisons."""
        return self.hidden_size * self.hidden_size + self.hidden_size

    def zeros(self) -> HeadParams:
        d, r = self.hidden_size, self.rank
        return HeadParams(torch.zeros(d, r), torch.zeros(d, r), torch.zeros(d))


@dataclass(frozen=True)
class HeadParams:
    a: torch.Tensor  # (d, r)
    b: torch.Tensor  # (d, r)
    bias: torch.Tensor  # (d,)

    def check(self, spec: HeadSpec) -> HeadParams:
        """Return self if it fits ``spec``; raise HeadShapeError naming the mismatch otherwise."""
        want = {"a": (spec.hidden_size, spec.rank), "b": (spec.hidden_size, spec.rank), "bias": (spec.hidden_size,)}
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise HeadShapeError(f"generated parameter {name!r} has shape {got}, this SRM needs {shape}")
            if not torch.isfinite(getattr(self, name)).all():
                raise HeadShapeError(f"generated parameter {name!r} has non-finite values")
        return self

    def flatten(self) -> torch.Tensor:
        return torch.cat([self.a.reshape(-1), self.b.reshape(-1), self.bias.reshape(-1)])  # (n_params,)

    @staticmethod
    def unflatten(flat: torch.Tensor | np.ndarray, spec: HeadSpec) -> HeadParams:
        flat = torch.as_tensor(np.asarray(flat, dtype=np.float32)).reshape(-1)
        if flat.numel() != spec.n_params:
            raise HeadShapeError(f"generated parameters have {flat.numel()} values, this SRM needs {spec.n_params}")
        d, r = spec.hidden_size, spec.rank
        a = flat[: d * r].reshape(d, r)
        b = flat[d * r : 2 * d * r].reshape(d, r)
        return HeadParams(a, b, flat[2 * d * r :]).check(spec)


def split_head(flat: torch.Tensor, spec: HeadSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat per-row parameters (n, 2·d·r + d) -> A (n, d, r), B (n, d, r), bias (n, d)."""
    d, r = spec.hidden_size, spec.rank
    n = flat.size(0)
    return flat[:, : d * r].reshape(n, d, r), flat[:, d * r : 2 * d * r].reshape(n, d, r), flat[:, 2 * d * r :]


def apply_head(user: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """u' = u + (u B) Aᵀ + bias. user (n, d); a, b (n, d, r) or (d, r); bias (n, d) or (d,) -> (n, d)."""
    if a.dim() == 2:
        return user + (user @ b) @ a.T + bias  # (n, d)
    low = torch.einsum("nd,ndr->nr", user, b)  # (n, r)
    return user + torch.einsum("nr,ndr->nd", low, a) + bias  # (n, d)
