"""Prometheus metrics of one app (a per-app :class:`CollectorRegistry`, so several apps in a process do not clash).

- ``tandem_requests_total{route, method, status}`` and ``tandem_request_seconds{route}`` (histogram), recorded by an
  ASGI middleware under the matched route's template (``/v1/items/{item_id}``), so ids do not explode the label space;
- ``tandem_candidate_cache_hits_total`` / ``..._misses_total`` and ``tandem_llm_generations_total``, counted by the
  handlers; ``tandem_degraded_total``: answers ranked without the LLM;
- the candidate batcher's ``tandem_llm_queue_depth`` (gauge), ``tandem_llm_batch_size``,
  ``tandem_llm_queue_wait_seconds`` and ``tandem_llm_batch_seconds`` (histograms), and
  ``tandem_llm_shared_total`` (requests that joined an identical search already queued or running);
- ``tandem_overloaded_total{queue}`` (429 answers) and ``tandem_deadline_exceeded_total{route}``.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tandem_requests", "HTTP requests by route, method and status",
                                ("route", "method", "status"), registry=r)
        self.latency = Histogram("tandem_request_seconds", "HTTP request latency by route", ("route",),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("tandem_candidate_cache_hits", "candidate lists served from the cache", registry=r)
        self.cache_misses = Counter("tandem_candidate_cache_misses", "candidate lookups with no usable cached list",
                                    registry=r)
        self.llm_generations = Counter("tandem_llm_generations", "LLM candidate lists generated", registry=r)
        self.degraded = Counter("tandem_degraded", "recommendations ranked without the LLM", registry=r)
        self.queue_depth = Gauge("tandem_llm_queue_depth", "fresh-list requests waiting for the LLM", registry=r)
        self.batch_size = Histogram("tandem_llm_batch_size", "candidate lists per batched beam search",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("tandem_llm_queue_wait_seconds", "time a fresh-list request waited for its batch",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram("tandem_llm_batch_seconds", "compute time of one batched beam search",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_shared = Counter("tandem_llm_shared", "requests that joined an identical search in flight",
                                    registry=r)
        self.overloaded = Counter("tandem_overloaded", "requests refused with 429 because a queue was full",
                                  ("queue",), registry=r)
        self.deadline_exceeded = Counter("tandem_deadline_exceeded", "model calls cut off by the request deadline",
                                         ("route",), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


ARRIVED = "tandem.arrived"  # the scope key holding the request's arrival time (time.monotonic), for its deadline
access_log = logging.getLogger("tandem.access")


def arrived(scope) -> float | None:
    """When the request reached the server (``time.monotonic()``), as the middleware recorded it."""
    return scope.get(ARRIVED)


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP answer and times it, by route template, records the arrival time
    (the start of the request's deadline) and writes one access-log line per request (logger ``tandem.access``)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        start = time.perf_counter()
        scope[ARRIVED] = time.monotonic()

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # the router records the matched route in the (shared) scope; refusals before routing have none
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            seconds = time.perf_counter() - start
            self.metrics.latency.labels(route).observe(seconds)
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
            client = scope.get("client") or ("-", 0)
            access_log.info('%s "%s %s" %d %.1f ms', client[0], scope["method"], scope.get("path", ""),
                            status["code"], 1000.0 * seconds)
