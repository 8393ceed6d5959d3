"""Micro-batching, backpressure and deadlines for the service's model calls.

- :class:`CandidateBatcher`: requests that need a fresh LLM candidate list wait in one bounded queue; a single worker
  thread takes the first, gathers more for at most ``max_wait_ms`` (or until ``max_batch``), and runs one batched
  trie beam search per distinct list length. Requests whose histories share the LLM's prompt window (the cache key)
  and length share one search, whether queued or running. The backend is only ever called from that worker, so no
  lock is needed around it.
- :class:`BoundedLane`: the reasoning model's calls run on their own few threads behind a bounded count of waiting
  calls, so slow reasoning cannot take every request thread.
- A full queue is :class:`~llm_cloud.service.errors.Overloaded` (429 with ``Retry-After``); a request waits at most
  until its deadline (:func:`wait`), then :class:`DeadlineExceeded`. The work it left keeps running and its result
  still fills the cache.

The request handlers run in the server's thread pool and block on a :class:`concurrent.futures.Future`; the event
loop never runs model code.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llm_cloud.backends import UnknownItemsError
from llm_cloud.service.errors import Overloaded
from llm_cloud.service.metrics import Metrics
from llm_cloud.service.queue_config import QueueConfig

log = logging.getLogger("tandem.service")


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before its model call finished."""


def retry_after_s(cfg: QueueConfig) -> int:
    """The ``Retry-After`` a refused client gets: about one batch window, at least a second."""
    return max(1, round(cfg.max_wait_ms / 1000.0 + 0.5))


def wait(future: Future, deadline: float | None, what: str) -> Any:
    """The future's result, or :class:`DeadlineExceeded` once ``deadline`` (``time.monotonic()``) has passed."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        raise DeadlineExceeded(f"no {what} within the request's deadline") from None


@dataclass
class _Job:
    key: Hashable
    history: np.ndarray  # (L,) item ids
    n: int
    deadline: float | None
    future: Future
    queued: float = field(default_factory=time.monotonic)


class CandidateBatcher:
    """Groups concurrent fresh-list requests into batched beam searches on one worker thread (module docstring).

    ``search(histories, n)`` is the backend's ``beam_candidates``; ``on_result(key, n, result)`` runs on the worker
    for every list computed (the service puts it in its cache).
    """

    def __init__(self, search: Callable[[list[np.ndarray], int], list], cfg: QueueConfig,
                 metrics: Metrics | None = None,
                 on_result: Callable[[Hashable, np.ndarray, int, Any], None] | None = None) -> None:
        self.search, self.cfg, self.metrics, self.on_result = search, cfg, metrics or Metrics(), on_result
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=cfg.max_queue)
        self._pending: dict[tuple[Hashable, int], _Job] = {}  # queued or running, by (key, n)
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="tandem-llm-batcher", daemon=True)
        self._worker.start()

    def submit(self, key: Hashable, history, n: int, deadline: float | None = None) -> Future:
        """A future for the top-``n`` list of ``history``; joins an identical request already queued or running.
        Raises :class:`Overloaded` when the queue is full."""
        with self._lock:
            shared = self._pending.get((key, n))
            if shared is not None:  # the search waits for the latest of the callers' deadlines
                shared.deadline = None if deadline is None or shared.deadline is None else max(shared.deadline,
                                                                                              deadline)
                self.metrics.batch_shared.inc()
                return shared.future
            job = _Job(key, np.asarray(history, dtype=np.int64), n, deadline, Future())
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.metrics.overloaded.labels("candidates").inc()
                raise Overloaded(f"the candidate queue is full ({self.cfg.max_queue} requests waiting for the LLM); "
                                 f"retry after the Retry-After seconds", retry_after=retry_after_s(self.cfg)) from None
            self._pending[(key, n)] = job
        self.metrics.queue_depth.set(self._queue.qsize())
        return job.future

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        self._queue.put(None)
        self._worker.join(timeout=30)

    # --- the worker -----------------------------------------------------------------------------------------------
    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        batch, stop = [first], False
        until = time.monotonic() + self.cfg.max_wait_ms / 1000.0
        while len(batch) < self.cfg.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self.metrics.queue_depth.set(self._queue.qsize())
            self._compute(batch)
            if stop:
                return

    def _compute(self, batch: list[_Job]) -> None:
        now = time.monotonic()
        live = []
        for job in batch:
            self.metrics.queue_wait.observe(now - job.queued)
            with self._lock:
                expired = job.deadline is not None and now >= job.deadline
            if expired:  # its caller has given up: skip the search
                self._finish(job, error=DeadlineExceeded("no candidate list within the request's deadline"))
            else:
                live.append(job)
        for n in sorted({job.n for job in live}):
            group = [job for job in live if job.n == n]
            self.metrics.batch_size.observe(len(group))
            start = time.perf_counter()
            try:
                results = self._search(group, n)
            except Exception as exc:  # noqa: BLE001 - every waiting request learns why; the service degrades
                log.exception("batched beam search of %d lists (n=%d) failed", len(group), n)
                for job in group:
                    self._finish(job, error=exc)
                continue
            finally:
                self.metrics.batch_seconds.observe(time.perf_counter() - start)
            for job, result in zip(group, results):
                self._finish(job, result=result)

    def _search(self, group: list[_Job], n: int) -> list:
        try:
            return self.search([job.history for job in group], n)
        except UnknownItemsError:
            if len(group) == 1:
                raise
        # one history the LLM does not know must not fail the others: search them one by one
        results = []
        for job in group:
            try:
                results.append(self.search([job.history], n)[0])
            except UnknownItemsError as exc:
                results.append(exc)
        return results

    def _finish(self, job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        if isinstance(result, BaseException):
            result, error = None, result
        if error is None and self.on_result is not None:
            try:
                self.on_result(job.key, job.history, job.n, result)
            except Exception:  # noqa: BLE001 - a cache that fails to store must not fail the request
                log.exception("storing a candidate list failed")
        with self._lock:
            self._pending.pop((job.key, job.n), None)
        if error is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(error)


class BoundedLane:
    """A few worker threads for one kind of slow call, behind a bounded count of calls waiting or running."""

    def __init__(self, name: str, workers: int, capacity: int, retry_after: int = 1,
                 metrics: Metrics | None = None) -> None:
        self.name, self.capacity, self.retry_after = name, capacity, retry_after
        self.metrics = metrics or Metrics()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"tandem-{name}")
        self._slots = threading.BoundedSemaphore(capacity)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` on the lane; :class:`Overloaded` when ``capacity`` calls are already waiting or running."""
        if not self._slots.acquire(blocking=False):
            self.metrics.overloaded.labels(self.name).inc()
            raise Overloaded(f"the {self.name} queue is full ({self.capacity} calls waiting or running); retry after "
                             f"the Retry-After seconds", retry_after=self.retry_after)
        future = self._pool.submit(fn, *args)
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
