"""Pointwise yes/no samples from the time-ordered leave-one-out split (ThinkRec arXiv 2505.15091; TALLRec).

- Positives are real next items: for training, a position inside the user's training sequence (its prefix is the
  history); for validation and test, the held-out item of :mod:`tandem.data.split`.
- Negatives are drawn uniformly from the items the user never interacted with (anywhere in their sequence), with the
  same history as the positive; ``negatives`` per positive.

A sample is identified by ``user:history length:item``, so traces, keywords and scores can be joined across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tandem.data.split import EvalCase, LeaveOneOut


@dataclass(frozen=True)
class Sample:
    user: int  # dense user index into the dataset
    history: tuple[int, ...]  # item ids, oldest first
    item: int
    label: int  # 1: the user's real next item, 0: a sampled negative

    @property
    def id(self) -> str:
        return f"{self.user}:{len(self.history)}:{self.item}"


def _negatives(seen: set[int], n_items: int, k: int, rng: np.random.Generator) -> list[int]:
    k = min(k, n_items - len(seen))  # a user who saw almost everything has fewer negatives to give
    out: list[int] = []
    while len(out) < k:
        item = int(rng.integers(1, n_items + 1))
        if item not in seen and item not in out:
            out.append(item)
    return out


def group(history: np.ndarray, item: int, user: int, seen: set[int], n_items: int, negatives: int,
          rng: np.random.Generator, max_history: int) -> list[Sample]:
    """The positive (``item`` after ``history``) and its sampled negatives."""
    hist = tuple(int(i) for i in history[-max_history:])
    return [Sample(user, hist, int(item), 1)] + [Sample(user, hist, neg, 0)
                                                  for neg in _negatives(seen, n_items, negatives, rng)]


def pick_users(split: LeaveOneOut, n: int | None, seed: int) -> np.ndarray:
    """``n`` users of the split (all when None), a seeded random subset in sorted order."""
    users = split.valid.users
    if n is None or n >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=n, replace=False))


def train_samples(sequences: list[np.ndarray], split: LeaveOneOut, users: np.ndarray, n_items: int,
                  per_user: int = 2, negatives: int = 1, seed: int = 0, max_history: int = 10) -> list[Sample]:
    """``per_user`` positions per user from their training sequence (at least 3 items of history each), each with
    ``negatives`` negatives."""
    rng = np.random.default_rng(seed)
    row = {int(u): k for k, u in enumerate(split.valid.users)}
    out: list[Sample] = []
    for u in users.tolist():
        seq = split.train[row[u]]
        positions = np.arange(3, len(seq))
        if not len(positions):
            continue
        seen = set(sequences[u].tolist())
        for pos in np.sort(rng.choice(positions, size=min(per_user, len(positions)), replace=False)).tolist():
            out += group(seq[:pos], int(seq[pos]), u, seen, n_items, negatives, rng, max_history)
    return out


def eval_samples(sequences: list[np.ndarray], case: EvalCase, users: np.ndarray, n_items: int, negatives: int = 9,
                 seed: int = 0, max_history: int = 10) -> list[Sample]:
    """The held-out item of each user in ``users`` and ``negatives`` negatives (one ranking group per user)."""
    rng = np.random.default_rng(seed)
    row = {int(u): k for k, u in enumerate(case.users)}
    out: list[Sample] = []
    for u in users.tolist():
        k = row[u]
        out += group(case.histories[k], int(case.targets[k]), u, set(sequences[u].tolist()), n_items, negatives,
                     rng, max_history)
    return out
