"""Cut training sequences into causal windows so that every (prefix -> next item) pair is trained exactly once.

A sequence ``s`` gives inputs ``s[:-1]`` and targets ``s[1:]``. If it fits in ``max_len`` it is one window. Longer
sequences are covered by windows of ``max_len`` whose ends advance by ``stride``; a later window takes the loss only on
positions the earlier windows did not cover, so each target is predicted once with at least ``max_len - stride`` items
of context (RecBole's rows always see up to ``max_len``; ``stride=1`` reproduces them exactly).
"""

from __future__ import annotations

import numpy as np


def make_windows(sequences: list[np.ndarray], max_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Return inputs (w, max_len) and targets (w, max_len), right-padded with 0; target 0 means 'no loss here'."""
    if not 1 <= stride <= max_len:
        raise ValueError(f"window stride must be in [1, max_len={max_len}], got {stride}")
    inputs, targets = [], []
    for seq in sequences:
        x, y = seq[:-1], seq[1:]
        m = len(x)
        if m == 0:
            continue
        ends = [min(m, max_len)]
        while ends[-1] < m:
            ends.append(min(m, ends[-1] + stride))
        prev_end = 0
        for end in ends:
            start = max(0, end - max_len)
            row_x = np.zeros(max_len, dtype=np.int64)
            row_y = np.zeros(max_len, dtype=np.int64)
            row_x[: end - start] = x[start:end]
            keep_from = prev_end - start  # positions before this were trained in an earlier window
            row_y[keep_from : end - start] = y[prev_end:end]
            inputs.append(row_x)
            targets.append(row_y)
            prev_end = end
    return np.stack(inputs), np.stack(targets)
