"""One ranking step of the device, shared by :class:`srm_device.session.DeviceSession` (on the device) and the
cloud's ``POST /v1/recommend`` (the same steps on the server for thin clients), so the two cannot drift.

A step (LSC4Rec, Lv et al. 2025, arXiv 2502.08667): the cached candidate list and the user vector of the freshest
history go to the request policy, which either keeps the list or asks the cloud for a fresh one; the SRM then scores
the list and the fusion rule merges the SRM's order with the LLM's. When the cloud cannot be used, the step ranks
with what it has (the cached list, or the SRM over the whole catalogue when nothing is cached) and says so
(``degraded``); it never raises because of the cloud.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from srm_device.fusion import FusionParams
from srm_device.models import SequentialRecommender
from srm_device.policies import RequestPolicy, Threshold
from srm_device.scoring import candidate_logits, catalogue_logits, fuse_list, policy_inputs, top_k

Timer = Callable[[str], AbstractContextManager]


@dataclass(frozen=True)
class CandidateList:
    """A list from the cloud: item ids (c,) best first, their LLM log-probabilities (c,), and whether the LLM made it
    for a history it knew nothing of (then its scores say nothing of the user)."""

    ids: np.ndarray
    scores: np.ndarray
    cold_start: bool = False


@dataclass
class Ranked:
    """The top ``k``: item ids (k,), fused (k,), SRM (k,) and LLM scores (k,; None over the whole catalogue).
    ``pool_srm`` and ``pool_fused`` (c,) score the whole candidate list in its own (the LLM's) order."""

    items: np.ndarray
    fused: np.ndarray
    srm: np.ndarray
    llm: np.ndarray | None
    fusion: str  # the rule that ranked them; "srm" over the whole catalogue
    pool_srm: np.ndarray | None = None
    pool_fused: np.ndarray | None = None


@dataclass
class Step:
    ranked: Ranked
    candidates: CandidateList | None  # the list that was ranked (None: the whole catalogue)
    requested: bool  # the step asked the cloud for a fresh list
    degraded: bool  # the cloud was needed but could not be used
    policy_score: float | None = None  # the policy's score of the cached list, when it was asked
    notes: list[str] = field(default_factory=list)


def _no_timer(stage: str) -> AbstractContextManager:
    return nullcontext()


def rank_list(model: SequentialRecommender, user: torch.Tensor, cand: CandidateList, rule: str,
              params: FusionParams, k: int, timer: Timer = _no_timer) -> Ranked:
    """The fused top ``k`` of one candidate list for a user vector (1, d)."""
    with timer("srm"):
        srm = candidate_logits(model, user, cand.ids)  # (c,)
    with timer("fusion"):
        fused = fuse_list(rule, params, cand.scores, srm)  # (c,)
        order = top_k(fused, k)
    return Ranked(cand.ids[order], fused[order], srm[order], np.asarray(cand.scores)[order], rule, srm, fused)


def rank_catalogue(model: SequentialRecommender, user: torch.Tensor, k: int, timer: Timer = _no_timer) -> Ranked:
    """The SRM's own top ``k`` over the whole catalogue for a user vector (1, d)."""
    with timer("srm"):
        logits = catalogue_logits(model, user)[0]  # (n,)
        order = top_k(logits, k)
    return Ranked(order + 1, logits[order], logits[order], None, "srm")


def rank_step(model: SequentialRecommender, user: torch.Tensor, history: list[int], cached: CandidateList | None,
              fetch: Callable[[], CandidateList] | None, policy: RequestPolicy, threshold: Threshold, rule: str,
              params: FusionParams, k: int, recent_k: int, current: bool = False,
              timer: Timer = _no_timer) -> Step:
    """Decide, maybe fetch, rank (module docstring).

    ``user`` (1, d) is the vector of ``history`` through the current head. ``cached`` is the list the device holds;
    ``current`` says it was made for exactly this history (no decision is needed). ``fetch`` asks the cloud for a
    fresh list and may raise anything; None means there is no cloud.
    """
    score, notes = None, []
    if cached is None:
        ask = True
    elif current:
        ask = False
    else:
        with timer("policy"):
            x = policy_inputs(model, user, [history], cached.ids[None], recent_k,
                              None if cached.cold_start else np.asarray(cached.scores)[None])
            score = float(policy.score(x)[0])
            ask = bool(policy.decide(x, threshold)[0])
    degraded = False
    if ask:
        try:
            if fetch is None:
                raise ConnectionError("no cloud client configured")
            with timer("llm"):
                cached = fetch()
        except Exception as exc:  # noqa: BLE001 - any cloud failure degrades the answer, never fails it
            degraded = True
            notes.append(f"cloud unavailable: {type(exc).__name__}: {exc}")
    if cached is None:
        notes.append("no cached candidates: ranked the whole catalogue with the SRM")
        return Step(rank_catalogue(model, user, k, timer), None, ask, True, score, notes)
    return Step(rank_list(model, user, cached, rule, params, k, timer), cached, ask, degraded, score, notes)
