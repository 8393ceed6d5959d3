"""The real-time protocol: the cloud trains on yesterday's data, the device sees today's, one item at a time.

The device-side methods this product implements (DUET arXiv 2302.04397, IntellectReq arXiv 2302.07335, Persona
arXiv 2509.06552, LSC4Rec) all exist for one situation: the cloud models were trained before the device saw its
newest behaviour. Leave-one-out has no such data (every model has trained on every item before the target), so this
split cuts each user's time-ordered sequence ``s`` in two:

- the **cloud part** ``s[:c]``: what the cloud models may train and validate on. Training examples are the prefixes
  of ``s[:c-1]``; the validation target is ``s[c-1]`` with history ``s[:c-1]``;
- the **real-time part** ``s[c:]``: what only the device sees. Every real-time position ``t >= c`` is a test row
  that predicts ``s[t]`` from ``s[:t]`` (the cloud part plus the real-time items before ``t``).

Two cut rules:

- ``global-time``: one time ``T`` for everyone, the ``time_fraction`` quantile of all interaction times; the cloud
  part is what happened strictly before ``T``. Users with fewer than 2 interactions before ``T`` (the cloud cannot
  validate them; new users take the cold-start path) are left out of training and testing; users with no interaction
  at or after ``T`` train and validate but give no test row.
- ``user-fraction``: the last ``rho`` of each user's sequence, at least ``min_realtime`` items, while the cloud part
  keeps at least 2; shorter users are left out. For datasets whose users come in short bursts, where one global
  time leaves most users entirely on one side.

A **nested** split (``nest >= 1``) applies the same rule again to the cloud parts: its cloud models train on an
older cloud part, and its real-time positions all lie inside the outer cloud part. Those positions are what a
parameter generator trains on, against an SRM that has not fitted them, which is the situation it meets on the
device (the deployed SRM has not fitted the device's newest items either). Nothing of the outer real-time part is
in a nested split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tandem.data.split import EvalCase

CUT_RULES = ("global-time", "user-fraction")
MIN_CLOUD = 2  # a training prefix and a validation target


@dataclass
class RealTimeSplit:
    train: list[np.ndarray]  # per cloud user: s[:c-1]; its prefixes are the training examples
    valid: EvalCase  # per cloud user: s[:c-1] -> s[c-1]
    test: EvalCase  # one row per real-time position: s[:t] -> s[t]; users repeat
    cloud_users: np.ndarray  # (u,) users in train/valid
    cut: np.ndarray  # (u,) c per cloud user: length of the cloud part
    info: dict = field(default_factory=dict)  # the rule, its parameters, T, counts

    @property
    def n_train_examples(self) -> int:
        return int(sum(max(0, len(s) - 1) for s in self.train))

    def cloud_parts(self) -> list[np.ndarray]:
        """Per cloud user, the whole cloud part s[:c] (validation item included)."""
        return [np.append(tr, t) for tr, t in zip(self.train, self.valid.targets)]


def _cuts_global_time(times: list[np.ndarray], time_fraction: float) -> tuple[np.ndarray, float]:
    every = np.sort(np.concatenate(times)) if times else np.zeros(0)
    if len(every) == 0:
        raise ValueError("the dataset has no interactions")
    cut_time = float(every[min(len(every) - 1, int(math.floor(time_fraction * len(every))))])
    cuts = np.array([int(np.searchsorted(t, cut_time, side="left")) for t in times], dtype=np.int64)
    return cuts, cut_time


def _cuts_user_fraction(lengths: np.ndarray, rho: float, min_realtime: int) -> np.ndarray:
    n_rt = np.maximum(min_realtime, np.ceil(rho * lengths).astype(np.int64))  # (U,)
    return lengths - n_rt  # may be < MIN_CLOUD: those users are left out


def realtime_split(sequences: list[np.ndarray], times: list[np.ndarray], cut: str = "global-time",
                   time_fraction: float = 0.8, rho: float = 0.3, min_realtime: int = 2,
                   nest: int = 0) -> RealTimeSplit:
    """Cut every user's time-ordered ``sequences[u]`` (with order keys ``times[u]``, non-decreasing) in two;
    ``nest`` times more on the cloud parts (see the module docstring)."""
    if cut not in CUT_RULES:
        raise ValueError(f"cut must be one of {', '.join(CUT_RULES)}, got {cut!r}")
    if not 0 < time_fraction < 1:
        raise ValueError(f"time_fraction must be in (0, 1), got {time_fraction}")
    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho}")
    if min_realtime < 1:
        raise ValueError(f"min_realtime must be >= 1, got {min_realtime}")
    if nest < 0:
        raise ValueError(f"nest must be >= 0, got {nest}")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    info: dict = {"cut": cut}
    if cut == "global-time":
        cuts, cut_time = _cuts_global_time(times, time_fraction)
        info.update(time_fraction=time_fraction, cut_time=cut_time)
    else:
        cuts = _cuts_user_fraction(lengths, rho, min_realtime)
        info.update(rho=rho, min_realtime=min_realtime)
    users = np.flatnonzero(cuts >= MIN_CLOUD)  # (u,)
    if nest > 0:
        keep = [int(c) if c >= MIN_CLOUD else 0 for c in cuts]
        inner = realtime_split([s[:c] for s, c in zip(sequences, keep)], [t[:c] for t, c in zip(times, keep)], cut,
                               time_fraction, rho, min_realtime, nest - 1)
        inner.info["nest"] = nest
        inner.info["outer"] = {k: v for k, v in info.items() if k != "cut"}
        return inner
    train, v_hist, v_tgt, t_users, t_hist, t_tgt = [], [], [], [], [], []
    for u in users:
        s, c = sequences[u], int(cuts[u])
        train.append(s[: c - 1])
        v_hist.append(s[: c - 1])
        v_tgt.append(s[c - 1])
        for t in range(c, len(s)):
            t_users.append(u)
            t_hist.append(s[:t])
            t_tgt.append(s[t])
    cut_arr = cuts[users]
    test_users = np.asarray(t_users, dtype=np.int64)
    info.update(
        users=len(sequences), cloud_users=len(users), test_users=int(len(np.unique(test_users))),
        left_out_users=int(len(sequences) - len(users)),
        cloud_interactions=int(cut_arr.sum()), realtime_positions=len(t_tgt),
        realtime_share=float(len(t_tgt) / max(1, int(lengths.sum()))),
    )
    return RealTimeSplit(
        train=train,
        valid=EvalCase(users.astype(np.int64), v_hist, np.asarray(v_tgt, dtype=np.int64)),
        test=EvalCase(test_users, t_hist, np.asarray(t_tgt, dtype=np.int64)),
        cloud_users=users.astype(np.int64), cut=cut_arr, info=info,
    )
