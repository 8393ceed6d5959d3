"""Prometheus metrics of one app (a per-app :class:`CollectorRegistry`, so several apps in a process do not clash).

- ``tandem_requests_total{route, method, status}`` and ``tandem_request_seconds{route}`` (histogram), recorded by an
  ASGI middleware under the matched route's template (``/v1/items/{item_id}``), so ids do not explode the label space;
- ``tandem_candidate_cache_hits_total`` / ``..._misses_total`` and ``tandem_llm_generations_total``, counted by the
  handlers; ``tandem_degraded_total``: answers ranked without the LLM.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP answer and times it, by route template."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # the router records the matched route in the (shared) scope; refusals before routing have none
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
