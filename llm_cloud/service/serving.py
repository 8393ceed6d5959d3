"""The service's handlers as a plain class (no web framework here, so tests can drive them directly).

``POST /v1/recommend`` runs the device's steps on the server for thin clients, as LSC4Rec does on the device (Lv et al.
2025, arXiv 2502.08667):

1. the parameter generator maps the last ``recent_k`` items to head parameters, sent through the Persona codebook
   exactly as a device receives them (prototype id + float16 edit);
2. the SRM turns the history into a user vector through that head;
3. candidates (cached by the newest items the LLM reads, its prompt window): an exact cached list for this history is
   used as is; else a cached list for a prefix of the history
   that lags by at most ``staleness`` items goes to the request policy, which either reranks it or asks the LLM for a
   fresh list; else the LLM generates one (``n_candidates`` long, trie-constrained beam search);
4. the SRM scores the candidates and the fusion rule merges the two orders; the top ``k`` are returned.

When the LLM fails, the answer is ranked with what is there (the stale cached list, or the SRM over the whole
catalogue) and flagged ``degraded``; a recommendation never fails because of the LLM. Fresh lists go through the
micro-batcher (:mod:`llm_cloud.service.batching`): a full queue is 429 with ``Retry-After``, and a request whose
deadline passes before its list is ready is answered degraded (``/v1/candidates``: 503). Every failure turned into a
degraded answer or a 503 is logged with its traceback.

With ``reasoning: true`` and a ThinkRec reasoning model loaded (arXiv 2505.15091, ``tandem serve --thinkrec DIR``),
the same list is returned with a reasoning trace for its top item; ``POST /v1/explain`` explains any one item for a
history, with the model's yes-probability with and without thinking. Without a reasoning model both answer 400
``feature_not_enabled``, saying how to get one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from llm_cloud.backends import UnknownItemsError
from llm_cloud.paramgen.prototypes import encode
from llm_cloud.service.batching import BoundedLane, CandidateBatcher, DeadlineExceeded, retry_after_s, wait
from llm_cloud.service.errors import FeatureNotEnabled, InvalidInput, NotFound, Overloaded, ServiceError, Unavailable
from llm_cloud.service.metrics import Metrics
from llm_cloud.service.queue_config import QueueConfig
from llm_cloud.service.stack import Stack
from srm_device.head import HeadParams
from srm_device.ranking import CandidateList, Step, rank_step
from srm_device.scoring import candidate_logits, recent_window, user_vector
from tandem import protocol as p

if TYPE_CHECKING:
    from llm_cloud.service.llm_process import LLMProcess
    from llm_cloud.thinkrec.serve import Reasoner

log = logging.getLogger("tandem.service")

REASONING_MESSAGE = ("reasoning traces need a reasoning model (ThinkRec), and this server has none loaded: build one "
                     "with `tandem eval thinkrec --out OUT` and serve with `tandem serve --thinkrec OUT/model` (or put "
                     "it in the store's thinkrec/ folder); or send `reasoning: false`")


class ReasoningLate(Unavailable):
    """The reasoning model ran past the request's deadline (503 for ``/v1/explain``; ``/v1/recommend`` answers its
    list without the trace, flagged ``degraded``)."""


@dataclass(frozen=True)
class CacheEntry:
    """A candidate list generated for one history: items (m,) best first, their LLM scores (m,), and the list length
    that was asked for (``n``; ``m`` can be smaller when the catalogue is)."""

    items: np.ndarray
    scores: np.ndarray
    cold_start: bool
    n: int

    def head(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[:n], self.scores[:n]

    def candidates(self, n: int) -> CandidateList:
        """The first ``n`` items as the device's :class:`CandidateList`."""
        return CandidateList(self.items[:n], self.scores[:n], self.cold_start)


class CandidateLRU:
    """A bounded, thread-safe LRU of candidate lists, keyed by what the LLM's list depends on: the newest ``window``
    items of the history (the LLM's prompt window; None keys by the whole history). Two histories that end in the same
    ``window`` items get the same list, and a client that sends only its newest items still finds its older lists."""

    def __init__(self, capacity: int = 4096, window: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        if window is not None and window < 1:
            raise ValueError(f"cache window must be at least 1 item, got {window}")
        self.capacity, self.window = capacity, window
        self._data: OrderedDict[tuple[int, ...], CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def key(self, history) -> tuple[int, ...]:
        items = tuple(int(i) for i in history)
        return items[-self.window:] if self.window and items else items

    def get(self, history, need: int) -> CacheEntry | None:
        """The entry for this history if it is at least ``need`` long."""
        key = self.key(history)
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry.n < need:
                return None
            self._data.move_to_end(key)
            return entry

    def stale(self, history, need: int, staleness: int) -> CacheEntry | None:
        """The entry of the longest non-empty proper prefix that lags by at most ``staleness`` items."""
        history = tuple(history)
        for lag in range(1, min(staleness, len(history) - 1) + 1):
            entry = self.get(history[:-lag], need)
            if entry is not None:
                return entry
        return None

    def put(self, history, entry: CacheEntry) -> None:
        key = self.key(history)
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)


@contextmanager
def _released(sem: threading.Semaphore):
    """Give a held slot back for the duration (a request waiting for the LLM computes nothing)."""
    sem.release()
    try:
        yield
    finally:
        sem.acquire()


class _Timer:
    STAGES = ("parameters", "srm", "policy", "llm", "fusion", "total")

    def __init__(self) -> None:
        self.ms: dict[str, float] = dict.fromkeys(self.STAGES, 0.0)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[stage] = self.ms.get(stage, 0.0) + 1000.0 * (time.perf_counter() - start)


class TandemServing:
    """The handlers of every ``/v1`` route over one loaded :class:`Stack`.

    The LLM backend is not thread-safe (transformers): only the batcher's one worker thread calls it, in this process
    or, with ``queues.llm_process``, in a child process (:mod:`llm_cloud.service.llm_process`). The reasoning model
    runs on its own bounded lane. The SRM and the parameter generator only run inference and are shared.
    ``deadline`` arguments are ``time.monotonic()`` values (None: ``queues.deadline_ms`` from now).
    """

    def __init__(self, stack: Stack, cache_size: int = 4096, metrics: Metrics | None = None,
                 queues: QueueConfig | None = None, llm_process: LLMProcess | None = None) -> None:
        """``llm_process``: one already started for this store (``tandem serve`` starts it before loading the
        stack, so the two load side by side); else one is started here when ``queues.llm_process`` asks for it."""
        self.stack = stack
        self.cache = CandidateLRU(cache_size, getattr(getattr(stack.backend, "artifact", None), "max_items", None))
        self.metrics = metrics or Metrics()
        self.queues = queues or QueueConfig()
        if llm_process is None and self.queues.llm_process and stack.backend.name == "transformers":
            from llm_cloud.service.llm_process import LLMProcess

            llm_process = LLMProcess(stack.store.llm, "transformers", self.queues.llm_threads)
        self.llm_process = llm_process.ready() if llm_process is not None else None
        search = self.llm_process or stack.backend
        self.batcher = CandidateBatcher(lambda histories, n: search.beam_candidates(histories, n), self.queues,
                                        self.metrics, self._store)
        self.cpu = threading.Semaphore(self.queues.cpu_slots)
        self.reasoning = BoundedLane("reasoning", self.queues.reasoning_workers, self.queues.reasoning_queue,
                                     retry_after_s(self.queues), self.metrics)
        self._codebooks = {name: p.Codebook(prototypes=book.prototypes.tolist(), basis=book.basis.tolist())
                           for name, book in (("duet_head", stack.codebook), ("duet", stack.layer_codebook))
                           if book is not None}

    # --- input checks ---------------------------------------------------------------------------------------------
    def check_items(self, ids: list[int], param: str) -> list[int]:
        """The ids as ints; :class:`InvalidInput` (422) naming every id outside the catalogue."""
        n = self.stack.n_items
        bad = sorted({int(i) for i in ids if not 1 <= int(i) <= n})
        if bad:
            shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
            raise InvalidInput(f"unknown item ids in {param}: {shown}; valid ids are 1..{n} (the catalogue's dense "
                               f"ids, see GET /v1/items/{{id}})", param=param)
        return [int(i) for i in ids]

    def user_history(self, user_id: int) -> list[int]:
        """A known user's history: the whole sequence but the held-out last item (the test history)."""
        seqs = self.stack.dataset.sequences
        if not 0 <= user_id < len(seqs):
            raise NotFound(f"unknown user_id {user_id}; this dataset has users 0..{len(seqs) - 1}", param="user_id")
        return [int(i) for i in seqs[user_id][:-1]]

    def close(self) -> None:
        """Stop the batcher and the reasoning lane (the stack belongs to whoever loaded it)."""
        self.batcher.close()
        self.reasoning.close()
        if self.llm_process is not None:
            self.llm_process.close()

    def deadline(self, start: float | None = None) -> float:
        """The deadline (``time.monotonic()``) of a request that arrived at ``start`` (None: now)."""
        return (time.monotonic() if start is None else start) + self.queues.deadline_ms / 1000.0

    # --- shared steps ---------------------------------------------------------------------------------------------
    @staticmethod
    def _entry(cand, n: int) -> CacheEntry:
        return CacheEntry(np.asarray(cand.items, dtype=np.int64), np.asarray(cand.scores, dtype=np.float64),
                          bool(cand.cold_start), n)

    def _store(self, key, history: np.ndarray, n: int, cand) -> None:
        """The batcher's callback for every list it computed: into the cache, even when its caller gave up."""
        self.metrics.llm_generations.inc()
        self.cache.put(history, self._entry(cand, n))

    def generate(self, history: list[int], n: int, deadline: float | None = None) -> CacheEntry:
        """A fresh LLM list for this history through the batcher (it caches it). Raises :class:`Overloaded` when
        the queue is full, :class:`DeadlineExceeded` past the deadline, else whatever the backend raised."""
        deadline = self.deadline() if deadline is None else deadline
        future = self.batcher.submit(self.cache.key(history), history, n, deadline)
        try:
            return self._entry(wait(future, deadline, "candidate list"), n)
        except DeadlineExceeded:
            self.metrics.deadline_exceeded.labels("candidates").inc()
            raise

    def reason(self, what: str, param: str | None, deadline: float | None, fn, *args):
        """``fn(*args)`` on the reasoning lane within the deadline. 429 when its queue is full; 503 with the reason
        when it fails or runs past the deadline (the recommendation itself never depends on it)."""
        deadline = self.deadline() if deadline is None else deadline
        future = self.reasoning.submit(fn, *args)
        hint = ", or send `reasoning: false`" if param else ""
        try:
            return wait(future, deadline, what)
        except DeadlineExceeded as exc:
            self.metrics.deadline_exceeded.labels("reasoning").inc()
            log.warning("%s: the reasoning model ran past the request deadline", what)
            raise ReasoningLate(f"the reasoning model did not finish within the deadline of "
                                f"{self.queues.deadline_ms:g} ms; retry later{hint}", param=param) from exc
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("%s: the reasoning model failed", what)
            raise Unavailable(f"the reasoning model failed ({type(exc).__name__}: {exc}); retry{hint}",
                              param=param) from exc

    @torch.no_grad()
    def generated_flat(self, history: list[int], method: str = "duet_head") -> np.ndarray:
        """(p,) parameters the method's generator makes from the last items it reads (its ``recent_k``)."""
        gen, _ = self._generator(method)
        recent = torch.tensor([recent_window(history, gen.cfg.recent_k)], dtype=torch.long)  # (1, k)
        return gen(recent)[0].numpy()  # (p,)

    def head(self, history: list[int]) -> HeadParams:
        """The head a device would install: generated, then sent as prototype id + edit through the codebook."""
        book = self.stack.codebook
        flat = book.decode(*encode(book, self.generated_flat(history)[None]))[0]  # (p,)
        return HeadParams.unflatten(flat, self.stack.generator.spec)

    def reasoner(self, param: str | None) -> Reasoner:
        """The loaded ThinkRec model; :class:`FeatureNotEnabled` (400) saying how to get one when there is none."""
        if self.stack.reasoner is None:
            raise FeatureNotEnabled(REASONING_MESSAGE, param=param)
        return self.stack.reasoner

    # --- routes ---------------------------------------------------------------------------------------------------
    def recommend(self, req: p.RecommendRequest, deadline: float | None = None) -> p.RecommendResponse:
        """The fused top ``k`` (module docstring); with ``reasoning`` also a trace for the top item (400 without a
        reasoning model). The list is the same with and without ``reasoning``. The model work holds one of the
        ``cpu_slots``, given back while the request waits for the LLM or the reasoning model."""
        reasoner = self.reasoner("reasoning") if req.reasoning else None
        st, t = self.stack, _Timer()
        deadline = self.deadline() if deadline is None else deadline
        with t("total"):
            history = self.user_history(req.user_id) if req.user_id is not None else self.check_items(
                req.history or [], "history")
            with self.cpu:
                step, need = self._rank(req, history, deadline, t)
                decision = p.Decision(policy=st.thresholds.policy, requested=step.requested,
                                      cache_hit=not step.requested, degraded=step.degraded,
                                      cold_start=bool(step.candidates and step.candidates.cold_start))
                if step.policy_score is not None:
                    decision.score, decision.threshold = step.policy_score, float(st.threshold.tau)
                r = step.ranked
                items = [self._item(int(r.items[i]), float(r.fused[i]), None if r.llm is None else float(r.llm[i]),
                                    float(r.srm[i])) for i in range(len(r.items))]
                pool = self._pool(history, step) if req.candidates else None
            if step.degraded:
                self.metrics.degraded.inc()
            (self.metrics.cache_hits if decision.cache_hit else self.metrics.cache_misses).inc()
            reasoning = None
            if reasoner is not None:
                with t("reasoning"):
                    try:
                        reasoning = self.reason("recommend", "reasoning", deadline, reasoner.recommend_trace,
                                                st.srm, history, [it.item_id for it in items],
                                                [it.title for it in items])
                    except ReasoningLate as exc:  # the list is ready: answer it, without the trace
                        decision.degraded = True
                        step.notes.append(exc.message)
        sent = step.requested and not step.degraded
        wire = p.WireBytes(up=p.request_bytes(len(history), st.srm.config.max_len) if step.requested else 0,
                           down=p.list_bytes(need) if sent else 0, parameters=st.codebook.update_bytes())
        return p.RecommendResponse(items=items, fusion=r.fusion, decision=decision, candidates=pool,
                                   wire_bytes=wire, notes=step.notes, reasoning=reasoning, timings_ms=t.ms)

    def _rank(self, req: p.RecommendRequest, history: list[int], deadline: float, t: _Timer) -> tuple[Step, int]:
        """The device's step for this history: generated head, user vector, cached or fresh list, fusion. Raises
        :class:`Overloaded` (429) when the list it needed could not even be queued."""
        st, th = self.stack, self.stack.thresholds
        with t("parameters"):
            head = self.head(history)
        with t("srm"):
            user = user_vector(st.srm, history, head)  # (1, d)
        need = min(max(th.n_candidates, req.k), p.MAX_K)
        entry = self.cache.get(history, need)
        current = entry is not None
        if entry is None:
            entry = self.cache.stale(history, need, th.staleness)
        refused: list[Overloaded] = []

        def fetch() -> CandidateList:
            try:
                with _released(self.cpu):
                    return self.generate(history, need, deadline).candidates(need)
            except Overloaded as exc:
                refused.append(exc)
                raise
            except DeadlineExceeded:
                log.warning("recommend: no fresh candidate list within the deadline; answering degraded")
                raise
            except Exception:
                log.exception("recommend: the LLM failed; answering degraded")
                raise

        step = rank_step(st.srm, user, history, None if entry is None else entry.candidates(need), fetch,
                         st.policy, st.threshold, th.fusion, st.fusion_params, req.k, th.recent_k, current=current,
                         timer=t)
        if refused:  # backpressure: the client is told to come back rather than served a degraded list
            raise refused[0]
        return step, need

    @torch.no_grad()
    def _pool(self, history: list[int], step) -> list[p.CandidateItem] | None:
        """The ranked candidate list in the LLM's order, each item with its fused, LLM, SRM and static-SRM scores."""
        r, cand = step.ranked, step.candidates
        if cand is None or r.pool_srm is None:
            return None
        static = candidate_logits(self.stack.srm, user_vector(self.stack.srm, history), cand.ids)  # (c,)
        title = self.stack.dataset.catalogue.title
        return [p.CandidateItem(item_id=int(i), title=title(int(i)), score=float(f), llm_score=float(lp),
                                srm_score=float(s), static_srm_score=float(s0))
                for i, f, lp, s, s0 in zip(cand.ids, r.pool_fused, cand.scores, r.pool_srm, static)]

    def explain(self, req: p.ExplainRequest, deadline: float | None = None) -> p.ExplainResponse:
        """The ThinkRec model's reasoning on whether the user of ``history`` would enjoy ``item_id``, with its
        yes-probability with and without thinking and the adapter the gate chose. 400 without a reasoning model."""
        reasoner = self.reasoner(None)
        history = self.check_items(req.history, "history")
        item = self.check_items([req.item_id], "item_id")[0]
        out = self.reason("explain", None, deadline, reasoner.explain, self.stack.srm, history, item,
                          req.max_tokens)
        return p.ExplainResponse(item_id=item, title=self.stack.dataset.catalogue.title(item), **out)

    def _item(self, item: int, score: float, llm: float | None, srm: float) -> p.RecommendedItem:
        return p.RecommendedItem(item_id=item, title=self.stack.dataset.catalogue.title(item), score=score,
                                 llm_score=llm, srm_score=srm)

    def candidates(self, req: p.CandidatesRequest, deadline: float | None = None) -> p.CandidatesResponse:
        """The LLM's top ``n`` for a history, through the same cache as ``recommend``."""
        history = self.check_items(req.history, "history")
        entry = self.cache.get(history, req.n)
        hit = entry is not None
        (self.metrics.cache_hits if hit else self.metrics.cache_misses).inc()
        if entry is None:
            try:
                entry = self.generate(history, req.n, deadline)
            except UnknownItemsError as exc:
                raise InvalidInput(str(exc), param="history") from None
            except ServiceError:
                raise
            except DeadlineExceeded as exc:
                log.warning("candidates: no list within the deadline of %g ms", self.queues.deadline_ms)
                raise Unavailable(f"no candidate list within the deadline of {self.queues.deadline_ms:g} ms (the LLM "
                                  f"is busy); retry later, or rank with a cached list") from exc
            except Exception as exc:  # noqa: BLE001
                log.exception("candidates: the LLM failed")
                raise Unavailable(f"the LLM failed to generate candidates ({type(exc).__name__}: {exc}); retry, or "
                                  f"rank with a cached list", param=None) from exc
        ids, scores = entry.head(req.n)
        return p.CandidatesResponse(items=ids.tolist(), scores=scores.tolist(), cold_start=entry.cold_start,
                                    cache_hit=hit)

    def _generator(self, method: str):
        """The generator and codebook of a device method; 400 naming the fix when this store has none."""
        if method == "duet":
            if self.stack.layer_generator is None:
                raise FeatureNotEnabled(
                    f"this store has no multi-layer generator; train one with `tandem train paramgen --edit layers "
                    f"--srm {self.stack.store.srm} --out {self.stack.store.duet}` and restart, or ask for "
                    f"method duet_head", param="method")
            return self.stack.layer_generator, self.stack.layer_codebook
        return self.stack.generator, self.stack.codebook

    def parameters(self, req: p.ParametersRequest) -> p.ParametersResponse:
        """Generated parameters for the device's recent items (DUET): the head edit (``duet_head``) or the multi-layer
        edits (``duet``), as a Persona prototype + edit or flat."""
        recent = self.check_items(req.recent, "recent")
        gen, book = self._generator(req.method)
        flat = self.generated_flat(recent, req.method)  # (p,)
        spec = gen.spec
        out = p.ParametersResponse(method=req.method, n_params=int(flat.size), encoding=req.encoding,
                                   hidden_size=spec.hidden_size, rank=spec.rank)
        if req.encoding == "flat":
            out.flat = flat.astype(np.float64).tolist()
        else:
            ids, coefs = encode(book, flat[None])
            out.prototype, out.coefs = int(ids[0]), coefs[0].astype(np.float64).tolist()
        return out

    def codebook(self, method: str = "duet_head") -> p.Codebook:
        """The Persona codebook of a device method, which a device downloads once to decode prototype updates."""
        if method not in p.DEVICE_METHODS:
            raise InvalidInput(f"method must be one of {', '.join(p.DEVICE_METHODS)}, got {method!r}", param="method")
        self._generator(method)  # 400 when the store lacks it
        return self._codebooks[method]

    def item(self, item_id: int) -> p.Item:
        cat = self.stack.dataset.catalogue
        if not 1 <= item_id <= cat.n_items:
            raise NotFound(f"unknown item id {item_id}; valid ids are 1..{cat.n_items}", param="item_id")
        text = {name: values[item_id] for name, values in cat.fields.items() if values[item_id]}
        return p.Item(item_id=item_id, raw_id=str(cat.raw_ids[item_id]), title=cat.title(item_id), text=text)

    def search(self, q: str, limit: int) -> p.ItemSearchResponse:
        """Catalogue items whose title contains ``q`` (the page's autocomplete)."""
        if not q.strip():
            raise InvalidInput("q must name part of a title, got an empty query", param="q")
        cat = self.stack.dataset.catalogue
        ids, total = cat.search(q, limit)
        return p.ItemSearchResponse(items=[p.ItemSummary(item_id=i, title=cat.title(i)) for i in ids], total=total)

    def user(self, user_id: int) -> p.User:
        """A known user's history (what ``user_id`` recommends from) and the item they chose next."""
        history = self.user_history(user_id)  # checks user_id
        seq, title = self.stack.dataset.sequences[user_id], self.stack.dataset.catalogue.title
        nxt = int(seq[-1]) if len(seq) else None
        return p.User(user_id=user_id, history=[p.ItemSummary(item_id=i, title=title(i)) for i in history],
                      next_item=None if nxt is None else p.ItemSummary(item_id=nxt, title=title(nxt)))

    def store_info(self) -> p.StoreInfo:
        """The manifest of the served store and what this server loaded from it."""
        st, th = self.stack, self.stack.thresholds
        try:
            manifest = st.store.read_manifest()
        except Exception:  # noqa: BLE001 - the store loaded; a manifest that went bad since only loses the summaries
            manifest = {}
        return p.StoreInfo(root=str(st.store.root), dataset=manifest.get("dataset") or st.dataset.name,
                           n_users=st.dataset.n_users, n_items=st.n_items, fusion=th.fusion, policy=th.policy,
                           request_ratio=th.request_ratio, n_candidates=th.n_candidates, staleness=th.staleness,
                           device_methods=list(self._codebooks), reasoning=st.reasoner is not None,
                           stages=manifest.get("stages", {}), versions=manifest.get("versions", {}),
                           total_seconds=manifest.get("total_seconds"))
