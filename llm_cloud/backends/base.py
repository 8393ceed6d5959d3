"""The one protocol every LLM backend implements, and the checks that do not depend on the engine.

A backend serves one generative-recommender checkpoint (:class:`~llm_cloud.generative.checkpoint.LLMArtifact`):

- :meth:`LLMBackend.beam_candidates` returns each user's top-N items with sequence log-probabilities from beam search
  constrained to the trie of real item codes. Histories are checked here, once for all engines: an unknown item id is
  a :class:`UnknownItemsError` that names them, and an empty history gets the most popular training items, flagged
  ``cold_start`` (scores are log(1 + count), not log-probabilities).
- :meth:`LLMBackend.generate` is plain greedy text generation, used for keyword summaries and reasoning traces.

Subclasses implement ``_beam`` (non-empty, valid histories only) and ``generate``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from llm_cloud.generative.checkpoint import LLMArtifact
from tandem.errors import TandemError

MAX_CANDIDATES = 100


class UnknownItemsError(TandemError):
    """A history holds item ids that the checkpoint's catalogue does not have."""

    def __init__(self, unknown: list[int], n_items: int) -> None:
        shown = ", ".join(str(i) for i in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        super().__init__(f"unknown item ids in history: {shown}; valid ids are 1..{n_items} (the catalogue's dense "
                         f"ids), so map raw ids through the catalogue first")
        self.unknown = unknown


@dataclass
class CandidateList:
    """One user's top-N: item ids (n,) best first, their scores (n,), and whether it is the cold-start fallback."""

    items: np.ndarray
    scores: np.ndarray
    cold_start: bool = False


class LLMBackend(ABC):
    name: str = "?"

    def __init__(self, artifact: LLMArtifact) -> None:
        self.artifact = artifact

    def check_histories(self, histories: list[np.ndarray]) -> list[np.ndarray]:
        """Integer arrays of valid ids; raises :class:`UnknownItemsError` naming every unknown id."""
        out, unknown = [], set()
        for h in histories:
            arr = np.asarray(h)
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise TandemError(f"item ids must be integers, got {arr.dtype} values such as {arr.flat[0]!r}")
            arr = arr.astype(np.int64).reshape(-1)
            bad = arr[(arr < 1) | (arr > self.artifact.n_items)]
            unknown.update(int(i) for i in bad)
            out.append(arr)
        if unknown:
            raise UnknownItemsError(sorted(unknown), self.artifact.n_items)
        return out

    def popular(self, n: int) -> CandidateList:
        counts = self.artifact.counts[1:]
        order = np.argsort(-counts, kind="stable")[:n]  # (n,)
        return CandidateList(items=order + 1, scores=np.log1p(counts[order].astype(np.float64)), cold_start=True)

    def beam_candidates(self, histories: list[np.ndarray], n: int = MAX_CANDIDATES) -> list[CandidateList]:
        """The top-``n`` valid, unique items for each history (1 <= n <= 100)."""
        if not 1 <= n <= MAX_CANDIDATES:
            raise TandemError(f"n (candidates per user) must be in 1..{MAX_CANDIDATES}, got {n}")
        histories = self.check_histories(histories)
        out: list[CandidateList | None] = [None] * len(histories)
        warm = [u for u, h in enumerate(histories) if len(h)]
        for u, cand in zip(warm, self._beam([histories[u] for u in warm], n)):
            out[u] = cand
        for u, h in enumerate(histories):
            if not len(h):
                out[u] = self.popular(n)
        return out  # type: ignore[return-value]

    @abstractmethod
    def _beam(self, histories: list[np.ndarray], n: int) -> list[CandidateList]:
        """Trie-constrained beam search for non-empty histories of valid ids."""

    @abstractmethod
    def generate(self, prompts: list[str], max_new_tokens: int = 64, exact_length: bool = False) -> list[str]:
        """Greedy completions of plain-text prompts (the new text only); ``exact_length`` bans the end-of-sequence
        token until ``max_new_tokens`` are out (for throughput measurements)."""

    def close(self) -> None:
        """Release the engine (worker processes, memory); the default holds nothing that needs it."""
        return None
