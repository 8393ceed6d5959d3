"""The trailing level that makes semantic IDs unique (TIGER, arXiv 2305.05065).

Items whose L-level codes collide get one extra token 0, 1, 2, ... in item order within their collision group; an
item with a unique code gets 0. The trailing level's size is the largest collision group.

Collision rate: 1 - (distinct codes / items), i.e. the share of items that a code cannot
tell apart from an earlier item with the same code. We also report the share of items that sit in any collision
group (``colliding_items``) and the largest group.
"""

from __future__ import annotations

import numpy as np


def collision_stats(codes: np.ndarray) -> dict:
    """Collision numbers for codes (n, L) of n items."""
    codes = np.asarray(codes)  # (n, L)
    n = len(codes)
    if n == 0:
        return {"n_items": 0, "n_distinct": 0, "collision_rate": 0.0, "colliding_items": 0.0, "max_group": 0}
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)  # (g,), (n,), (g,)
    inverse = inverse.reshape(-1)  # (n,)
    return {
        "n_items": int(n),
        "n_distinct": int(len(counts)),
        "collision_rate": float(1.0 - len(counts) / n),
        "colliding_items": float((counts[inverse] > 1).mean()),
        "max_group": int(counts.max()),
    }


def trailing_level(codes: np.ndarray) -> np.ndarray:
    """The disambiguating token of each item: its rank (0, 1, ...) within its group of equal codes, in row order."""
    codes = np.asarray(codes)  # (n, L)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)  # (n,) group id per item
    order = np.argsort(inverse, kind="stable")  # (n,) items grouped, row order kept within a group
    sorted_groups = inverse[order]  # (n,)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]  # (g,) first position of each group
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))  # (n,)
    rank = np.empty(len(codes), dtype=np.int64)  # (n,)
    rank[order] = np.arange(len(codes)) - group_start
    return rank


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """Append the trailing level: (n, L) -> (n, L+1) codes in which every row is unique."""
    codes = np.asarray(codes, dtype=np.int64)  # (n, L)
    return np.concatenate([codes, trailing_level(codes)[:, None]], axis=1)  # (n, L+1)
