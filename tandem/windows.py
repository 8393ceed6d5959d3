"""Windows over long sequences such that every position is a training target exactly once.

Shared by the SRM trainer (windows of input positions) and the generative LM (windows of items): a sequence of ``n``
positions is covered by windows of ``window`` positions whose ends advance by ``stride``; a later window takes the
loss only from where the previous one ended, so each target is predicted once with at least ``window - stride``
positions of context. ``stride=1`` gives one window per target with the full context.
"""

from __future__ import annotations


def window_bounds(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_target) indices of the windows over ``n`` positions; targets are ``first_target..end-1``."""
    if not 1 <= stride <= window:
        raise ValueError(f"window stride must be in [1, {window}] (the window length), got {stride}")
    ends = [min(n, window)]
    while ends[-1] < n:
        ends.append(min(n, ends[-1] + stride))
    bounds, prev_end = [], 0
    for end in ends:
        bounds.append((max(0, end - window), end, prev_end))
        prev_end = end
    return bounds
