"""Fitting the Persona codebook in the cloud: k-means prototypes plus a PCA edit basis (arXiv 2509.06552)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from srm_device.persona import Codebook


def fit_codebook(params: np.ndarray, n_prototypes: int, edit_dim: int, seed: int = 0) -> Codebook:
    """params (n, p) generated parameter vectors -> Codebook with P prototypes and an m-dimensional edit basis."""
    params = np.asarray(params, dtype=np.float32)
    n_prototypes = min(n_prototypes, len(params))
    km = KMeans(n_clusters=n_prototypes, n_init=3, random_state=seed).fit(params)
    residual = params - km.cluster_centers_[km.labels_]  # (n, p)
    m = min(edit_dim, residual.shape[1], len(params))
    pca = PCA(n_components=m, random_state=seed).fit(residual)
    return Codebook(km.cluster_centers_.astype(np.float32), pca.components_.T.astype(np.float32))


def encode(book: Codebook, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest prototype and float16 edit coefficients: (n, p) -> ids (n,), coefs (n, m)."""
    params = np.asarray(params, dtype=np.float32)
    protos = book.prototypes
    dist = (params**2).sum(1)[:, None] - 2.0 * params @ protos.T + (protos**2).sum(1)[None]  # (n, P), no (n, P, p)
    ids = dist.argmin(1)
    coefs = (params - book.prototypes[ids]) @ book.basis  # (n, m)
    return ids.astype(np.uint16), coefs.astype(np.float16)
