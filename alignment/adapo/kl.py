"""Reward-aware dynamic KL coefficient (our design for AdaPO, arXiv 2508.09155), replacing GRPO's fixed β.

After each step the reward gap is measured on the step's rollouts::

    gap_t = mean R(final answer right) − mean R(final answer wrong)     (0 if no final answer is right,
                                                                         None if none is wrong)
    β_t+1 = clip(β_t · exp(rate · (target_gap − gap_t) / target_gap), β_min, β_max)

A healthy reward separates right from wrong outcomes. When the gap shrinks below ``target_gap`` the reward has
stopped tracking correctness — the signature of reward hacking, e.g. collecting the verdict reward by gaming
Accept/Refine instead of answering right — so β grows and pulls the policy back to the reference model. While the gap
is above target β relaxes, letting the policy move. A batch without a single right final answer counts as gap 0:
measured on chain_sum at lr 5e-5, holding β there let a policy that had just relaxed β collapse into malformed
outputs (every reward −1, zero GRPO advantage) and stay there. A None gap (no wrong answer) leaves β unchanged;
``fixed=True`` never changes it.
"""

from __future__ import annotations

import math


class RewardGapKL:
    def __init__(self, beta0: float, target_gap: float = 1.0, rate: float = 0.5, beta_min: float | None = None,
                 beta_max: float | None = None, fixed: bool = False) -> None:
        if beta0 <= 0:
            raise ValueError(f"beta0 must be > 0, got {beta0}; TRL only builds the reference model when beta != 0")
        if target_gap <= 0:
            raise ValueError(f"target_gap must be > 0, got {target_gap}; use e.g. 1.0")
        if rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate}; use e.g. 0.5")
        self.beta_min = beta0 / 10 if beta_min is None else beta_min
        self.beta_max = beta0 * 10 if beta_max is None else beta_max
        if not 0 < self.beta_min <= beta0 <= self.beta_max:
            raise ValueError(f"need 0 < beta_min <= beta0 <= beta_max, got {self.beta_min}, {beta0}, "
                             f"{self.beta_max}; widen the bounds around beta0")
        self.beta, self.target_gap, self.rate, self.fixed = beta0, target_gap, rate, fixed

    def update(self, gap: float | None) -> float:
        """Apply one step's reward gap; returns the new β."""
        if self.fixed or gap is None or not math.isfinite(gap):
            return self.beta
        factor = math.exp(self.rate * (self.target_gap - gap) / self.target_gap)
        self.beta = min(max(self.beta * factor, self.beta_min), self.beta_max)
        return self.beta
