"""The service on Ray Serve (the ``[ray]`` extra): ``tandem serve --engine ray --replicas N``.

Each replica is a Ray actor that builds the same FastAPI app as ``tandem serve`` (:func:`~llm_cloud.service.app.
create_app`) over the same artifact store, through Serve's ingress; Serve's HTTP proxy spreads requests over the
replicas and replaces one that dies. What is per replica:

- the model stack, the LLM included (in the replica's own process: the replica already is a process of its own, so
  ``--llm-process`` is off inside it);
- the candidate LRU, the micro-batching queue and the metrics. A user's repeated requests reach any replica, so with
  N replicas a cached list is found about 1/N as often as with one server, unless the client pins a user to a replica.
  Every answer carries ``x-tandem-replica``, the replica's id, so ``/metrics`` and ``/readyz`` read through the proxy
  say which replica they describe;
- health: Serve calls :meth:`TandemReplica.check_health` every few seconds; a replica whose store did not load is
  unhealthy, and Serve replaces it.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import asdict
from pathlib import Path

from llm_cloud.service.queue_config import QueueConfig
from pipelines.ray_candidates import connect, require_ray
from tandem.errors import TandemError

log = logging.getLogger(__name__)
APP_NAME = "tandem"
DEPLOYMENT = "TandemReplica"


class TandemReplica:
    """One Serve replica: the whole service over ``store``, loaded before the replica takes traffic."""

    def __init__(self, store: str, backend: str, cache_size: int, queues: dict, threads: int) -> None:
        self.store, self.backend, self.cache_size, self.threads = store, backend, cache_size, threads
        self.queues = QueueConfig(**{**queues, "llm_process": False})
        self.fastapi = None

    def __serve_build_asgi_app__(self):
        from ray import serve

        from llm_cloud.service.app import create_app

        replica = serve.get_replica_context().replica_tag
        self.fastapi = create_app(self.store, self.backend, threads=self.threads, cache_size=self.cache_size,
                              queues=self.queues)

        @self.fastapi.middleware("http")
        async def tag(request, call_next):
            response = await call_next(request)
            response.headers["x-tandem-replica"] = replica
            return response

        return self.fastapi

    def check_health(self) -> None:
        """Serve's health probe: raises while the store failed to load (Serve then restarts this replica)."""
        state = getattr(self.fastapi, "state", None)  # `app` is taken: Serve's wrapper owns that name
        if state is not None and getattr(state, "load_error", None):
            raise RuntimeError(f"the artifact store did not load: {state.load_error}")


def application(store: str | Path, backend: str = "transformers", replicas: int = 1, cache_size: int = 4096,
                queues: QueueConfig | None = None, threads: int = 1, concurrency: int = 64):
    """The bound Serve application: ``replicas`` copies of :class:`TandemReplica`, ``threads`` CPUs each, at most
    ``concurrency`` requests in each at once (Serve's ``max_ongoing_requests``; its default of 5 would leave the
    replica's micro-batching queue nearly empty: batches of 1.4 lists, 5.9 requests/s on one replica here)."""
    require_ray()
    from ray import serve

    if replicas < 1 or concurrency < 1:
        raise TandemError(f"--replicas and --replica-concurrency must be >= 1, got {replicas} and {concurrency}")
    deployment = serve.deployment(
        serve.ingress()(TandemReplica), name=DEPLOYMENT, num_replicas=replicas,
        ray_actor_options={"num_cpus": threads}, max_ongoing_requests=concurrency, health_check_period_s=5,
        graceful_shutdown_timeout_s=5)
    return deployment.bind(str(store), backend, cache_size, asdict(queues or QueueConfig()), threads)


def run(store: str | Path, host: str, port: int, address: str | None = None, block: bool = True, **options) -> None:
    """Deploy the service on the cluster at ``address`` (None: a local one) with Serve's proxy on ``host:port``;
    with ``block``, serve until interrupted, then take the application down."""
    from ray import serve

    connect(address)
    serve.start(http_options={"host": host, "port": port})
    t0 = time.perf_counter()
    serve.run(application(store, **options), name=APP_NAME, route_prefix="/")
    log.info("Serve application %r ready in %.1f s", APP_NAME, time.perf_counter() - t0)
    if not block:
        return
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM too takes the application down
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()
