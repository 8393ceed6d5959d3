"""Persona prototypes on the device (Persona, arXiv 2509.06552).

The cloud clusters generated head parameters into P prototypes and learns a small edit basis (PCA of what is left
after the prototype). The device downloads this codebook once; after that an update is a prototype id (uint16) and
``m`` edit coefficients (float16), instead of the whole parameter vector:

    θ = prototypes[id] + basis · coefs          prototypes (P, p), basis (p, m), coefs (m,)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT32 = 4
ID_BYTES = 2  # uint16 prototype id
COEF_BYTES = 2  # float16 coefficient


@dataclass
class Codebook:
    prototypes: np.ndarray  # (P, p) float32
    basis: np.ndarray  # (p, m) float32, orthonormal columns

    @property
    def n_prototypes(self) -> int:
        return self.prototypes.shape[0]

    @property
    def edit_dim(self) -> int:
        return self.basis.shape[1]

    def decode(self, ids: np.ndarray, coefs: np.ndarray) -> np.ndarray:
        """ids (n,), coefs (n, m) -> flat parameters (n, p)."""
        ids = np.asarray(ids)
        if ids.min(initial=0) < 0 or ids.max(initial=0) >= self.n_prototypes:
            raise ValueError(f"prototype id out of range 0..{self.n_prototypes - 1}")
        coefs = np.asarray(coefs, dtype=np.float32)
        return self.prototypes[ids] + coefs @ self.basis.T  # (n, p)

    def update_bytes(self) -> int:
        """Bytes of one prototype+edit update."""
        return ID_BYTES + COEF_BYTES * self.edit_dim

    def download_bytes(self) -> int:
        """Bytes of the codebook itself, downloaded once per device."""
        return FLOAT32 * (self.prototypes.size + self.basis.size)
