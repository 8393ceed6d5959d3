"""Pointwise recommendation metrics (ThinkRec arXiv 2505.15091, TALLRec): AUC over all samples, UAUC (the mean of
per-user AUCs, over users with both a positive and a negative), and NDCG@k when each user's samples are ranked by
score (one positive among sampled negatives)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def pointwise_report(users: list[int], labels: list[int], scores: list[float] | np.ndarray,
                     k: int = 5) -> dict[str, float | int | None]:
    """``auc``, ``uauc``, ``ndcg@k`` (mean over users, each positive ranked among that user's samples; ties are
    broken against the positive) and the counts behind them."""
    labels_a, scores_a = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    by_user: dict[int, list[int]] = defaultdict(list)
    for idx, u in enumerate(users):
        by_user[int(u)].append(idx)
    aucs, ndcgs = [], []
    for rows in by_user.values():
        y, s = labels_a[rows], scores_a[rows]
        if 0 < y.sum() < len(y):
            aucs.append(_auc(y, s))
        for pos in np.flatnonzero(y):
            rank = int((s[y == 0] >= s[pos]).sum())  # negatives at or above the positive
            ndcgs.append(1.0 / np.log2(rank + 2) if rank < k else 0.0)
    both = 0 < labels_a.sum() < len(labels_a)
    return {"auc": _auc(labels_a, scores_a) if both else None, "uauc": float(np.mean(aucs)) if aucs else None,
            f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else None, "samples": len(labels_a),
            "users": len(by_user), "users_in_uauc": len(aucs)}
