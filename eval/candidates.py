"""Candidate sources for the device tier: ``llm:DIR`` (the generative recommender, the real cloud), and stand-ins:
``popular``, ``srm`` (the device SRM itself) and ``srm:DIR`` (another trained SRM, e.g. a GRU4Rec)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from srm_device.models import SequentialRecommender
from srm_device.scoring import pad_histories
from srm_device.training.checkpoint import load_checkpoint
from tandem.errors import TandemError


class CandidateSource(Protocol):
    name: str

    def topn(self, histories: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        """ids (u, n) best first, and their scores (u, n)."""


@dataclass
class PopularSource:
    counts: np.ndarray  # (n_items + 1,) training counts; index 0 unused
    name: str = "popular"

    def topn(self, histories: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-self.counts[1:], kind="stable")[:n] + 1  # (n,)
        scores = np.log(self.counts[order] + 1.0)
        return np.tile(order, (len(histories), 1)), np.tile(scores, (len(histories), 1))


@dataclass
class SRMSource:
    model: SequentialRecommender
    name: str = "srm"

    @torch.no_grad()
    def topn(self, histories: list[np.ndarray], n: int, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        ids, scores = [], []
        for start in range(0, len(histories), batch):
            seq, lengths = pad_histories(histories[start : start + batch], self.model.config.max_len)
            logits = self.model.full_sort_scores(seq, lengths)  # (b, n_items + 1), column 0 = -inf
            top = torch.topk(torch.log_softmax(logits, dim=1), n, dim=1)
            ids.append(top.indices.numpy())
            scores.append(top.values.numpy())
        return np.concatenate(ids), np.concatenate(scores)


@dataclass
class LLMSource:
    """The generative recommender's trie-constrained beam search; scores are sequence log-probabilities."""

    backend: object  # llm_cloud.backends.LLMBackend
    name: str = "llm"

    def topn(self, histories: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        lists = self.backend.beam_candidates(histories, n=n)
        ids = np.zeros((len(lists), n), dtype=np.int64)
        scores = np.full((len(lists), n), FILLER_SCORE)
        for row, cand in enumerate(lists):
            k = len(cand.items)
            ids[row, :k], scores[row, :k] = cand.items, cand.scores
            if k < n:  # fewer valid beams than n (tiny catalogues): fill with other items, ranked last
                rest = np.setdiff1d(np.arange(1, self.backend.artifact.n_items + 1), cand.items)[: n - k]
                ids[row, k : k + len(rest)] = rest
        return ids, scores


FILLER_SCORE = -1e9


def _llm_source(folder: str, device_srm: SequentialRecommender) -> LLMSource:
    from llm_cloud.backends import load_backend

    backend = load_backend("transformers", Path(folder))
    if backend.artifact.n_items != device_srm.n_items:
        raise TandemError(f"LLM checkpoint {folder} knows {backend.artifact.n_items} items, the device SRM "
                          f"{device_srm.n_items}; train both on the same dataset")
    return LLMSource(backend, f"llm:{folder}")


def parse_source(spec: str, device_srm: SequentialRecommender, train: list[np.ndarray]) -> CandidateSource:
    """``popular`` | ``srm`` | ``srm:DIR`` | ``llm:DIR``."""
    kind, _, arg = spec.partition(":")
    if kind == "popular" and not arg:
        counts = np.bincount(np.concatenate(train), minlength=device_srm.n_items + 1).astype(np.float64)
        return PopularSource(counts)
    if kind == "srm":
        if not arg:
            return SRMSource(device_srm, "srm")
        model, _ = load_checkpoint(Path(arg))
        if model.n_items != device_srm.n_items:
            raise TandemError(f"candidate SRM {arg} has {model.n_items} items, the device SRM {device_srm.n_items}; "
                              f"train both on the same dataset")
        return SRMSource(model, f"srm:{arg}")
    if kind == "llm" and arg:
        return _llm_source(arg, device_srm)
    raise TandemError(f"--candidates {spec!r} is not a candidate source; use popular, srm, srm:DIR or llm:DIR")
