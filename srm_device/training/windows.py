"""Cut training sequences into causal windows so that every (prefix -> next item) pair is trained exactly once.

A sequence ``s`` gives inputs ``s[:-1]`` and targets ``s[1:]``. If it fits in ``max_len`` it is one window. Longer
sequences are covered by windows of ``max_len`` whose ends advance by ``stride``; a later window takes the loss only on
positions the earlier windows did not cover, so each target is predicted once with at least ``max_len - stride`` items
of context (RecBole's rows always see up to ``max_len``; ``stride=1`` reproduces them exactly).
"""

from __future__ import annotations

import numpy as np

from tandem.windows import window_bounds


def make_windows(sequences: list[np.ndarray], max_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Return inputs (w, max_len) and targets (w, max_len), right-padded with 0; target 0 means 'no loss here'."""
    inputs, targets = [], []
    for seq in sequences:
        x, y = seq[:-1], seq[1:]
        if len(x) == 0:
            continue
        for start, end, first_target in window_bounds(len(x), max_len, stride):
            row_x = np.zeros(max_len, dtype=np.int64)
            row_y = np.zeros(max_len, dtype=np.int64)
            row_x[: end - start] = x[start:end]
            row_y[first_target - start : end - start] = y[first_target:end]  # earlier positions: an earlier window
            inputs.append(row_x)
            targets.append(row_y)
    return np.stack(inputs), np.stack(targets)
