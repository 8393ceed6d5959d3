"""Outcomes of one self-evaluating rollout and a sliding window of recent outcomes (AdaPO, arXiv 2508.09155).

A rollout is the three turns of :mod:`alignment.seat.format` inside one completion: a first answer, a self-evaluation
block with an ``Accept``/``Refine`` verdict, and the final (possibly revised) answer. Against the gold answer it is:

* ``malformed`` when :func:`alignment.seat.format.parse` rejects it (no sub-task outcome is defined then);
* ``first_right`` / ``final_right``: the first and the final answer match the gold answer numerically;
* ``verdict_right``: the verdict is ``Accept`` exactly when the first answer is right;
* ``kind``: first→final correctness, ``"rr"`` (kept a right answer), ``"wr"`` (fixed a wrong one), ``"rw"`` (broke
  a right one), ``"ww"`` (stayed wrong); ``None`` when malformed.

A missing first answer (a block with no "The answer is N." before it) is well-formed but counts as a wrong first
answer. :class:`OutcomeWindow` keeps the most recent outcomes; its ``distribution`` is over well-formed outcomes
only, while its accuracies are over all outcomes (a malformed rollout fails every sub-task), as a benchmark reports.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from alignment.seat.format import answers_match, parse

KINDS = ("rr", "wr", "rw", "ww")


@dataclass(frozen=True)
class Outcome:
    malformed: bool
    first_right: bool
    final_right: bool
    verdict_right: bool
    kind: str | None  # one of KINDS, None when malformed


def classify(completion: str, gold: str | float | int | None) -> Outcome:
    """The outcome of one completion given the gold answer; never raises (junk is ``malformed``)."""
    parsed = parse(completion) if isinstance(completion, str) else None
    if parsed is None:
        return Outcome(malformed=True, first_right=False, final_right=False, verdict_right=False, kind=None)
    gold_s = None if gold is None else str(gold)
    first = answers_match(parsed.first_answer, gold_s)
    final = answers_match(parsed.final_answer, gold_s)
    kind = ("r" if first else "w") + ("r" if final else "w")
    return Outcome(malformed=False, first_right=first, final_right=final,
                   verdict_right=(parsed.verdict == "Accept") == first, kind=kind)


class OutcomeWindow:
    """The ``size`` most recent outcomes."""

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"window size must be >= 1, got {size}; pass a positive number of outcomes to keep")
        self.size = size
        self._items: deque[Outcome] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._items)

    def push(self, outcomes: Outcome | Iterable[Outcome]) -> None:
        self._items.extend([outcomes] if isinstance(outcomes, Outcome) else outcomes)

    def distribution(self) -> dict[str, float]:
        """Shares of rr/wr/rw/ww among well-formed outcomes (uniform 0.25 each when there are none)."""
        kinds = [o.kind for o in self._items if not o.malformed]
        if not kinds:
            return {k: 0.25 for k in KINDS}
        return {k: kinds.count(k) / len(kinds) for k in KINDS}

    def _share(self, attr: str) -> float:
        return sum(getattr(o, attr) for o in self._items) / len(self._items) if self._items else 0.0

    @property
    def malformed_rate(self) -> float:
        return self._share("malformed")

    @property
    def answer_accuracy(self) -> float:
        """Share of outcomes whose first answer is right."""
        return self._share("first_right")

    @property
    def final_accuracy(self) -> float:
        return self._share("final_right")

    @property
    def self_eval_accuracy(self) -> float:
        """Share of outcomes whose verdict is right (Accept iff the first answer is right)."""
        return self._share("verdict_right")
