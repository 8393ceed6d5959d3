"""Time-ordered leave-one-out split (RecBole's ``LS: valid_and_test`` with ``order: TO``).

For a user sequence ``s`` of length n: the last item is the test target (history ``s[:n-1]``), the second-to-last is
the validation target (history ``s[:n-2]``), and every earlier prefix is a training example, which a causal model
sees in one pass over ``s[:n-2]``. Users with fewer than 3 interactions cannot give all three and are left out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

MIN_LEN = 3


@dataclass
class EvalCase:
    """Histories and targets for one split; ``users`` index into the dataset."""

    users: np.ndarray  # (u,)
    histories: list[np.ndarray]  # u × (len_i,)
    targets: np.ndarray  # (u,)


@dataclass
class LeaveOneOut:
    train: list[np.ndarray]  # per kept user: s[:n-2]; its prefixes are the training examples
    valid: EvalCase
    test: EvalCase

    @property
    def n_train_examples(self) -> int:
        """Number of (prefix, next item) pairs, i.e. RecBole's training rows."""
        return int(sum(max(0, len(s) - 1) for s in self.train))


def leave_one_out(sequences: list[np.ndarray]) -> LeaveOneOut:
    kept = [u for u, s in enumerate(sequences) if len(s) >= MIN_LEN]
    if len(kept) < len(sequences):
        warnings.warn(f"{len(sequences) - len(kept)} users with fewer than {MIN_LEN} interactions are left out of "
                      f"the split (use --kcore {MIN_LEN} to drop them explicitly)", stacklevel=2)
    users = np.asarray(kept, dtype=np.int64)
    seqs = [sequences[u] for u in kept]
    return LeaveOneOut(
        train=[s[:-2] for s in seqs],
        valid=EvalCase(users, [s[:-2] for s in seqs], np.array([s[-2] for s in seqs], dtype=np.int64)),
        test=EvalCase(users, [s[:-1] for s in seqs], np.array([s[-1] for s in seqs], dtype=np.int64)),
    )


def get_case(split: LeaveOneOut, name: str) -> EvalCase:
    if name not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {name!r}")
    return split.valid if name == "valid" else split.test
