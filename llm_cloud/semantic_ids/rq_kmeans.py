"""Residual quantisation by k-means (RQ-KMeans), the default quantiser for semantic IDs.

TIGER (arXiv 2305.05065) quantises item embeddings residually with L codebooks: level l assigns the residual left by
levels 1..l-1 to its nearest centroid, and passes on what remains. TIGER learns the codebooks in an RQ-VAE (see
:mod:`llm_cloud.semantic_ids.rq_vae`); fitting each level with k-means on the residuals directly, as here, is the
simpler variant used by later work, needs no training loop, and is deterministic for a fixed seed.

Reduce the dimension first (:func:`pca_reduce`, default 32 as TIGER's latent). On 384-d MiniLM rows of ML-100K's
1,682 items, residuals after level 1 are nearly orthogonal noise: k-means then puts one near-zero centroid that
takes most items (level-2 perplexity 7.6 of 256) and 25.7% of items collide. On 32 PCA dimensions the collision rate
is 1.1%, close to the floor set by items with identical text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA


@dataclass
class RQResult:
    """Codes and codebooks of a residual quantisation."""

    codes: np.ndarray  # (n, L) int64, level l in 0..C_l-1
    codebooks: list[np.ndarray] = field(default_factory=list)  # level -> (C_l, d) centroids, C_l <= C
    residual_mse: list[float] = field(default_factory=list)  # level -> mean squared norm of the residual left

    def reconstruct(self) -> np.ndarray:
        """The sum of each item's chosen centroids: (n, d)."""
        return sum(cb[self.codes[:, level]] for level, cb in enumerate(self.codebooks))  # (n, d)


def pca_reduce(x: np.ndarray, dim: int | None, seed: int = 0) -> tuple[np.ndarray, float]:
    """Project rows (n, d) on their top ``min(dim, n, d)`` principal components: ((n, k), explained variance share).

    ``dim`` None or 0 keeps ``x`` as it is (share 1.0).
    """
    x = np.asarray(x, dtype=np.float64)  # (n, d)
    if not dim:
        return x, 1.0
    k = min(dim, x.shape[0], x.shape[1])
    pca = PCA(n_components=k, random_state=seed)
    z = pca.fit_transform(x)  # (n, k)
    return z, float(pca.explained_variance_ratio_.sum())


def kmeans_codes(x: np.ndarray, codebook_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means with k = min(C, number of distinct rows): returns (labels (n,), centroids (k, d)).

    With fewer distinct points than C, asking for C clusters would make empty clusters; those codes stay unused.
    """
    x = np.asarray(x, dtype=np.float64)  # (n, d)
    n_distinct = len(np.unique(np.round(x, 6), axis=0))
    k = max(1, min(codebook_size, n_distinct))
    if k == 1:
        return np.zeros(len(x), dtype=np.int64), x.mean(axis=0, keepdims=True)  # (n,), (1, d)
    km = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=300)
    labels = km.fit_predict(x).astype(np.int64)  # (n,)
    return labels, km.cluster_centers_  # (n,), (k, d)


def rq_kmeans(x: np.ndarray, levels: int = 3, codebook_size: int = 256, seed: int = 0) -> RQResult:
    """Quantise the rows of ``x`` (n, d) into ``levels`` residual k-means codes of at most ``codebook_size`` each.

    Level l runs k-means (seed ``seed + l``) on the residual of levels 1..l-1; the residual's mean squared norm
    never increases from one level to the next.
    """
    if levels < 1 or codebook_size < 2:
        raise ValueError(f"need levels >= 1 and codebook_size >= 2, got {levels} and {codebook_size}")
    residual = np.asarray(x, dtype=np.float64).copy()  # (n, d)
    codes = np.zeros((len(residual), levels), dtype=np.int64)  # (n, L)
    result = RQResult(codes=codes)
    for level in range(levels):
        labels, centroids = kmeans_codes(residual, codebook_size, seed + level)  # (n,), (k, d)
        codes[:, level] = labels
        residual = residual - centroids[labels]  # (n, d)
        result.codebooks.append(centroids)
        result.residual_mse.append(float((residual ** 2).sum(axis=1).mean()))
    return result
