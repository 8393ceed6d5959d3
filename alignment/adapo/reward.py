"""Adaptive multi-sub-task reward for self-evaluation RL (our design for AdaPO, arXiv 2508.09155).

Sub-task rewards of one well-formed rollout (outcome from :mod:`.outcomes`):

* ``r_answer``   = 1 if the first answer is right else 0;
* ``r_eval``     = 1 if the verdict is right (Accept iff the first answer is right) else 0;
* ``r_revision`` = +1 for ``wr`` (fixed), −1 for ``rw`` (broke a right answer), 0 for ``rr``/``ww``.

A malformed rollout gets the total reward ``format_penalty`` (−1.0) and no sub-task rewards. The total reward of a
well-formed rollout is ``R = Σ_k w_k r_k``.

Adaptive weights from the recent outcome distribution ``p = (p_rr, p_wr, p_rw, p_ww)`` (well-formed outcomes in the
window) and the window's self-evaluation accuracy ``a_eval``; each sub-task's *need* is how far it is from mastered::

    need_answer   = 1 − (p_rr + p_rw)                                  # first-answer error rate
    need_revision = ½ · (p_ww / (p_wr + p_ww) + p_rw / (p_rr + p_rw))  # failure to fix + harm (½ if a ratio is 0/0)
    need_eval     = 1 − a_eval
    w_k           = 3 · (floor + need_k) / Σ_j (floor + need_j)        # floor = 0.1; Σ_k w_k = 3

The fixed baseline is ``w = (1, 1, 1)``, so both variants have the same reward scale. With EMA smoothing the used
weights are ``w_t = m · w_{t−1} + (1 − m) · ŵ_t`` (``m`` = 0.9, ``w_0`` = the baseline), which keeps ``Σ w = 3``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from alignment.adapo.outcomes import Outcome, OutcomeWindow, classify
from tandem import distributed

SUBTASKS = ("answer", "eval", "revision")


def subtask_rewards(outcome: Outcome) -> dict[str, float] | None:
    """The three sub-task rewards of one outcome (None when malformed)."""
    if outcome.malformed:
        return None
    return {"answer": float(outcome.first_right), "eval": float(outcome.verdict_right),
            "revision": {"wr": 1.0, "rw": -1.0}.get(outcome.kind or "", 0.0)}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.5


def completion_text(completion: Any) -> str:
    """Plain text of a completion: a string, or a conversational list of ``{"role", "content"}`` messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        return "\n".join(completion_text(m) for m in completion if not isinstance(m, dict)
                         or m.get("role", "assistant") == "assistant")
    return ""


class AdaptiveReward:
    """TRL reward function: outcomes → window → weights → ``Σ_k w_k r_k`` per completion.

    ``adaptive=False`` keeps the fixed weights (1, 1, 1) with the same bookkeeping and logging. After every call
    ``last_stats`` holds the batch's mean sub-task rewards, the weights used, the window's distribution and
    accuracies, and the mean reward of final-right vs final-wrong rollouts (malformed ones count as final-wrong).
    """

    def __init__(self, adaptive: bool = True, window: int = 256, floor: float = 0.1, momentum: float | None = 0.9,
                 format_penalty: float = -1.0) -> None:
        if floor < 0:
            raise ValueError(f"floor must be >= 0, got {floor}; use 0.1 to keep every sub-task trained")
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}; use 0.9 or None for no EMA")
        self.adaptive, self.floor, self.momentum, self.format_penalty = adaptive, floor, momentum, format_penalty
        self.window = OutcomeWindow(window)
        self.current = {k: 1.0 for k in SUBTASKS}
        self.last_stats: dict[str, Any] = {}
        self.__name__ = "adapo_reward" if adaptive else "fixed_reward"

    def weights(self, distribution: dict[str, float], eval_accuracy: float = 0.5) -> dict[str, float]:
        """Un-smoothed weights for a distribution over rr/wr/rw/ww (see the module docstring); (1, 1, 1) if fixed."""
        if not self.adaptive:
            return {k: 1.0 for k in SUBTASKS}
        p = {k: float(distribution.get(k, 0.0)) for k in ("rr", "wr", "rw", "ww")}
        need = {"answer": 1.0 - (p["rr"] + p["rw"]),
                "eval": 1.0 - eval_accuracy,
                "revision": 0.5 * (_ratio(p["ww"], p["wr"] + p["ww"]) + _ratio(p["rw"], p["rr"] + p["rw"]))}
        raw = {k: self.floor + max(need[k], 0.0) for k in SUBTASKS}
        total = sum(raw.values())
        if total <= 0:  # floor 0 and every sub-task mastered
            return {k: 1.0 for k in SUBTASKS}
        return {k: 3.0 * raw[k] / total for k in SUBTASKS}

    def update(self) -> dict[str, float]:
        """Recompute the weights from the window (EMA-smoothed when ``momentum`` is set); returns them."""
        target = self.weights(self.window.distribution(), self.window.self_eval_accuracy)
        m = self.momentum if (self.adaptive and self.momentum) else 0.0
        self.current = {k: m * self.current[k] + (1.0 - m) * target[k] for k in SUBTASKS}
        return dict(self.current)

    def __call__(self, prompts: list[Any], completions: list[Any], answer: list[Any] | None = None,
                 **kwargs: Any) -> list[float]:
        if answer is None or len(answer) != len(completions):
            raise ValueError(f"the 'answer' column must give one gold answer per completion, got "
                             f"{None if answer is None else len(answer)} for {len(completions)}; add an 'answer' "
                             f"column to the dataset")
        mine = [classify(completion_text(c), a) for c, a in zip(completions, answer)]
        # under torchrun every process scores the rollouts of all of them, so the window, the weights, the reward
        # gap (and β) are the same everywhere; each returns the rewards of its own rollouts
        shares = distributed.gather_objects(mine)
        start = sum(len(s) for s in shares[: distributed.rank()])
        outcomes = [o for share in shares for o in share]
        self.window.push(outcomes)
        w = self.update()
        rewards: list[float] = []
        parts: dict[str, list[float]] = {k: [] for k in SUBTASKS}
        for o in outcomes:
            r = subtask_rewards(o)
            if r is None:
                rewards.append(self.format_penalty)
                continue
            for k in SUBTASKS:
                parts[k].append(r[k])
            rewards.append(sum(w[k] * r[k] for k in SUBTASKS))
        right = [r for r, o in zip(rewards, outcomes) if o.final_right]
        wrong = [r for r, o in zip(rewards, outcomes) if not o.final_right]
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        self.last_stats = {
            "reward_mean": mean, "reward_std": (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5,
            "subtask_rewards": {k: (sum(v) / len(v) if v else None) for k, v in parts.items()},
            "weights": w, "distribution": self.window.distribution(),
            "answer_accuracy": self.window.answer_accuracy, "self_eval_accuracy": self.window.self_eval_accuracy,
            "final_accuracy": self.window.final_accuracy, "malformed_rate": self.window.malformed_rate,
            "reward_final_right": sum(right) / len(right) if right else None,
            "reward_final_wrong": sum(wrong) / len(wrong) if wrong else None,
        }
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if callable(log_metric):
            for k in SUBTASKS:
                log_metric(f"adapo/weight_{k}", w[k])
            for key in ("answer_accuracy", "self_eval_accuracy", "final_accuracy", "malformed_rate"):
                log_metric(f"adapo/{key}", self.last_stats[key])
        return rewards[start : start + len(mine)]

    def reward_gap(self) -> float | None:
        """Mean reward of final-right minus final-wrong rollouts of the last batch. A batch with no right final answer
        has gap 0 (the reward separates nothing, e.g. a policy collapsed into malformed outputs); a batch with no
        wrong one has no gap (None)."""
        right, wrong = self.last_stats.get("reward_final_right"), self.last_stats.get("reward_final_wrong")
        if wrong is None:
            return None
        return 0.0 if right is None else right - wrong
