"""Training and evaluation positions for the hypernetwork, computed once from the frozen SRM: for every (prefix ->
next item) pair, the SRM's hidden state at the prefix's last item, the prefix's last k items, and the target."""

from __future__ import annotations

import numpy as np
import torch

from llm_cloud.paramgen.trainer import Positions
from srm_device.models import SequentialRecommender
from srm_device.scoring import recent_window, user_vectors
from srm_device.training.windows import make_windows
from tandem.data.split import EvalCase


def unfitted_cases(split) -> tuple[EvalCase, EvalCase] | None:
    """The positions a generator trains and validates on when its SRM has not fitted them, or None.

    Under a nested real-time split (:mod:`tandem.data.realtime`) the SRM trained on an older cloud part, and the
    nested real-time positions (all inside the outer cloud part) are new to it, as the device's items are new to the
    deployed SRM. Training takes every such position but each user's last; validation takes each user's last, which
    is the outer validation item. Otherwise (``nest`` 0, or leave-one-out) the generator trains on the SRM's own
    training prefixes: None."""
    info = getattr(split, "info", None) or {}
    if not info.get("nest"):
        return None
    case = split.test
    last = np.r_[np.flatnonzero(np.diff(case.users)), len(case.users) - 1] if len(case.users) else np.zeros(0, int)
    is_last = np.zeros(len(case.users), dtype=bool)
    is_last[last] = True

    def pick(mask: np.ndarray) -> EvalCase:
        rows = np.flatnonzero(mask)
        return EvalCase(case.users[rows], [case.histories[r] for r in rows], case.targets[rows])

    return pick(~is_last), pick(is_last)


@torch.no_grad()
def train_positions(srm: SequentialRecommender, train: list[np.ndarray], k: int, stride: int = 10,
                    batch: int = 256) -> Positions:
    x, y = make_windows(train, srm.config.max_len, stride)  # (w, L), (w, L)
    users, recents, targets = [], [], []
    srm.eval()
    for start in range(0, len(x), batch):
        xb = torch.from_numpy(x[start : start + batch])  # (b, L)
        yb = torch.from_numpy(y[start : start + batch])  # (b, L)
        hidden = srm(xb)  # (b, L, d)
        rows, cols = torch.nonzero(yb, as_tuple=True)  # positions that carry a target
        users.append(hidden[rows, cols])  # (m, d)
        targets.append(yb[rows, cols])  # (m,)
        padded = torch.cat([torch.zeros(len(xb), k - 1, dtype=torch.long), xb], dim=1)  # (b, k-1+L)
        idx = cols[:, None] + torch.arange(k)[None]  # (m, k): the k items ending at col
        recents.append(padded[rows[:, None], idx])  # (m, k)
    return Positions(torch.cat(users), torch.cat(recents), torch.cat(targets))


def case_positions(srm: SequentialRecommender, case: EvalCase, k: int) -> Positions:
    """Static user states (u, d), recent windows (u, k) and targets (u,) of an evaluation case."""
    srm.eval()
    recent = torch.tensor([recent_window(h, k) for h in case.histories], dtype=torch.long)  # (u, k)
    return Positions(user_vectors(srm, case.histories), recent, torch.from_numpy(case.targets))
