"""Ranking metrics from the 0-based rank of the single target item (full ranking, one target per user).

rank = number of items scored strictly above the target, so a target tied with others gets the best rank among them.
* HR@K   = 1[rank < K]
* NDCG@K = 1[rank < K] / log2(rank + 2)   (one relevant item, so IDCG = 1)
* MRR@K  = 1[rank < K] / (rank + 1)
"""

from __future__ import annotations

import numpy as np
import torch

KS = (5, 10, 20)
METRICS = ("hr", "ndcg", "mrr")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target. scores (b, n_items+1), targets (b,). NaN scores are refused, not ranked."""
    if torch.isnan(scores).any():
        raise ValueError("NaN in model scores: refusing to rank (a NaN compared with > would silently count as a "
                         "hit or miss); check for attention rows that see only padding")
    target_scores = scores.gather(1, targets[:, None])  # (b, 1)
    return (scores > target_scores).sum(dim=1)  # (b,)


def per_row_metrics(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, np.ndarray]:
    """HR/NDCG/MRR at each K for every row (r,); keys like ``ndcg@10``."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / (ranks + 1.0), 0.0)
    return out


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Mean HR/NDCG/MRR at each K over rows (users, or real-time positions); keys like ``ndcg@10``."""
    return {name: float(v.mean()) for name, v in per_row_metrics(ranks, ks).items()}


def per_user_means(users: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each user's mean of ``values`` over their rows: (r,), (r,) -> (u,), users in sorted order."""
    _, inverse, counts = np.unique(np.asarray(users), return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=values) / counts


def user_mean_metrics(users: np.ndarray, ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Each user's mean over their rows, then the mean over users (the row mean when every user has one row)."""
    return {name: float(per_user_means(users, v).mean()) for name, v in per_row_metrics(ranks, ks).items()}


def format_table(metrics: dict[str, float], ks: tuple[int, ...] = KS) -> str:
    lines = ["metric " + "".join(f"{'@' + str(k):>9}" for k in ks)]
    for m in METRICS:
        lines.append(f"{m:<7}" + "".join(f"{metrics[f'{m}@{k}']:>9.4f}" for k in ks))
    return "\n".join(lines)
