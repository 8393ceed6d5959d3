"""Request policies: when should the device ask the cloud for a fresh candidate list?

A policy turns what the device knows (its cached candidates, its SRM's view of them, its recent behaviour) into one
score per user; a higher score means more reason to request. Its threshold is calibrated on validation users so that a
target share of them would request (the request ratio). Ties at the threshold are broken at random in the proportion
that hits the ratio, so discrete scores still calibrate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass
class PolicyInputs:
    """A batch of device states; all arrays share the user axis u."""

    srm_scores: np.ndarray  # (u, c) SRM scores of the cached candidates, with the freshest history
    llm_rank: np.ndarray  # (u, c) the cached list's own order, 1-based
    history_len: np.ndarray  # (u,) items the device holds for the user
    max_len: int  # SRM input length (shorter histories are padded)
    user: np.ndarray  # (u, d) SRM user representation
    recent_emb: np.ndarray  # (u, k, d) embeddings of the most recent items (zeros where padded)
    cand_emb: np.ndarray  # (u, c, d) embeddings of the cached candidates
    cached_mass: np.ndarray  # (u,) SRM probability (softmax over the whole catalogue) that falls in the cached list
    llm_mass: np.ndarray | None = None  # (u,) the LLM's own probability that the cached list holds the next item

    def __len__(self) -> int:
        return len(self.history_len)


@dataclass
class Threshold:
    tau: float  # request when score > tau
    p_tie: float  # ... and with this probability when score == tau
    ratio: float  # the target it was calibrated for


class RequestPolicy(ABC):
    name: ClassVar[str]

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def score(self, x: PolicyInputs) -> np.ndarray:
        """(u,) higher = more reason to request."""

    def calibrate(self, x: PolicyInputs, ratio: float) -> Threshold:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"request ratio must be in [0, 1], got {ratio}")
        s = self.score(x)
        if ratio <= 0.0:
            return Threshold(np.inf, 0.0, ratio)
        if ratio >= 1.0:  # everyone, including scores below the lowest validation score
            return Threshold(-np.inf, 1.0, ratio)
        tau = float(np.quantile(s, 1.0 - ratio, method="higher"))
        above, tied = float((s > tau).mean()), float((s == tau).mean())
        p_tie = float(np.clip((ratio - above) / tied, 0.0, 1.0)) if tied > 0 else 0.0
        return Threshold(tau, p_tie, ratio)

    def decide(self, x: PolicyInputs, th: Threshold) -> np.ndarray:
        """(u,) bool: request or not."""
        s = self.score(x)
        tie_break = np.random.default_rng(self.seed).random(len(s)) < th.p_tie
        return (s > th.tau) | ((s == th.tau) & tie_break)


POLICIES: dict[str, type[RequestPolicy]] = {}


def register(cls: type[RequestPolicy]) -> type[RequestPolicy]:
    POLICIES[cls.name] = cls
    return cls


def make_policy(name: str, **kwargs) -> RequestPolicy:
    if name not in POLICIES:
        raise ValueError(f"unknown request policy {name!r}; known policies are {', '.join(sorted(POLICIES))}")
    return POLICIES[name](**kwargs)
