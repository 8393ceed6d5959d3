"""A device session: local history, cached candidates with cloud scores, the current generated parameters.

The session adapts its SRM with one device method of the registry (:mod:`srm_device.adaptation`; ``duet_head`` or
``duet``, whose payload is the flat generated parameters; the HTTP client decodes Persona updates into them). A
payload of the wrong shape or with non-finite values is refused and the last good one kept. ``recommend()`` reranks
the cached candidates with the adapted SRM and fuses the two orders. The
request policy decides whether to ask the cloud for a fresh list first. If the cloud is unreachable, raises, answers
garbage, or misses the deadline, the session ranks with what it has (the cached list, or the SRM's own ranking over
the whole catalogue when nothing is cached) and marks the result ``degraded``. It never raises to the user.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from srm_device.adaptation import DeviceMethod
from srm_device.fusion import FusionParams
from srm_device.head import HeadShapeError
from srm_device.models import SequentialRecommender
from srm_device.policies import RequestPolicy, Threshold
from srm_device.ranking import CandidateList, rank_step
from srm_device.scoring import user_vector


class CloudClient(Protocol):
    def candidates(self, history: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item ids and their scores for this history."""

    def parameters(self, recent: list[int]) -> np.ndarray:
        """Flat generated parameters (p,) for these recent items."""


@dataclass
class Recommendation:
    items: list[int]
    fused: list[float]
    srm: list[float]
    llm: list[float]
    requested: bool  # the policy asked the cloud
    degraded: bool  # the cloud could not be used; ranked with what the device had
    notes: list[str] = field(default_factory=list)


class DeviceSession:
    def __init__(self, model: SequentialRecommender, method: DeviceMethod, policy: RequestPolicy, threshold: Threshold,
                 client: CloudClient | None, fusion: str = "sum", fusion_params: FusionParams | None = None,
                 n_candidates: int = 100, recent_k: int = 20, timeout_s: float = 0.5) -> None:
        self.model = model.eval()
        if method.srm is not model:
            raise ValueError(f"the device method {method.name!r} was built for another SRM than this session's")
        self.method = method
        self.policy, self.threshold = policy, threshold
        self.client = client
        self.fusion, self.fusion_params = fusion, fusion_params or FusionParams()
        self.n_candidates, self.recent_k, self.timeout_s = n_candidates, recent_k, timeout_s
        self.history: list[int] = []
        self.cached_ids = np.zeros(0, dtype=np.int64)
        self.cached_scores = np.zeros(0)
        self.payload: torch.Tensor | None = None  # (1, p) the last good generated parameters; None: static SRM
        self.rejected_updates = 0
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tandem-cloud")

    # --- state updates -------------------------------------------------------------------------------------------
    def observe(self, item: int) -> None:
        if not 1 <= int(item) <= self.model.n_items:
            raise ValueError(f"item id {item} is outside this catalogue (1..{self.model.n_items})")
        self.history.append(int(item))

    def set_candidates(self, ids, scores) -> None:
        """Cache a candidate list from the cloud; refuse empty lists, unknown or duplicate ids."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(ids) == 0:
            raise ValueError("the candidate list is empty; the cloud must send at least one item")
        if len(ids) != len(scores):
            raise ValueError(f"{len(ids)} candidate ids but {len(scores)} scores")
        unknown = ids[(ids < 1) | (ids > self.model.n_items)]
        if len(unknown):
            raise ValueError(f"unknown candidate item ids {unknown[:5].tolist()} "
                             f"(catalogue is 1..{self.model.n_items})")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("the candidate list repeats items")
        self.cached_ids, self.cached_scores = ids, scores

    def apply_parameters(self, flat) -> bool:
        """Install generated parameters (p,); on a bad shape or value keep the last good ones and return False."""
        try:
            self.payload = self.method.check(torch.as_tensor(np.asarray(flat, dtype=np.float32)).reshape(1, -1))
            return True
        except (HeadShapeError, ValueError, TypeError):
            self.rejected_updates += 1
            return False

    # --- scoring -------------------------------------------------------------------------------------------------
    def _call(self, fn, *args):
        try:
            return self._pool.submit(fn, *args).result(timeout=self.timeout_s)
        except cf.TimeoutError:
            raise TimeoutError(f"cloud timed out after {self.timeout_s}s") from None

    def _fetch(self) -> CandidateList:
        ids, scores = self._call(self.client.candidates, list(self.history), self.n_candidates)
        self.set_candidates(ids, scores)
        return CandidateList(self.cached_ids, self.cached_scores)

    def recommend(self, k: int = 10) -> Recommendation:
        if self.payload is None:
            user = user_vector(self.model, self.history)  # (1, d) the static SRM
        else:
            user = self.method.user_states([self.history], self.payload)  # (1, d)
        cached = CandidateList(self.cached_ids, self.cached_scores) if len(self.cached_ids) else None
        step = rank_step(self.model, user, self.history, cached, None if self.client is None else self._fetch,
                         self.policy, self.threshold, self.fusion, self.fusion_params, k, self.recent_k)
        r = step.ranked
        llm = r.llm.tolist() if r.llm is not None else [float("nan")] * len(r.items)
        return Recommendation(r.items.tolist(), r.fused.tolist(), r.srm.tolist(), llm, step.requested,
                              step.degraded, step.notes)

    def refresh_parameters(self) -> bool:
        """Ask the cloud for new parameters; keep the current ones on any failure."""
        if self.client is None:
            return False
        try:
            flat = self._call(self.client.parameters, self.history[-self.recent_k :])
        except Exception:  # noqa: BLE001
            return False
        return self.apply_parameters(flat)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
