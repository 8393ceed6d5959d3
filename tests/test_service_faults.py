"""Faults between the tiers, on real servers: the LLM backend failing in the middle of a burst of concurrent requests
(each request of a failed batch gets a degraded answer, none a 5xx), and the device session against a cloud that
drops connections, answers late, or sends malformed or truncated JSON (degraded answers and kept parameters, never an
exception)."""

from __future__ import annotations

import http.server
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.live import Live
from tests.test_service import check_recommendation


@pytest.fixture(scope="module")
def live(service_store):
    from llm_cloud.service.app import create_app
    from llm_cloud.service.queue_config import QueueConfig

    # batches of at most 3, so a burst of 8 fresh-list requests takes several batched searches
    app = create_app(service_store, api_keys=(), queues=QueueConfig(max_batch=3))
    with Live(app) as server:
        server.app = app
        yield server


def degraded_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("tandem_degraded") and not line.startswith("tandem_degraded_created"))


def test_llm_failing_mid_burst_degrades_each_request_it_fails(live, monkeypatch) -> None:
    backend = live.app.state.serving.stack.backend
    real, calls, lock = backend.beam_candidates, [], threading.Lock()

    def fails_after_the_first(histories, n, *args, **kwargs):
        with lock:
            calls.append(len(histories))  # one call is one batched search
            k = len(calls)
        if k > 1:
            raise RuntimeError("device-side assert triggered")  # what a dying accelerator raises
        return real(histories, n, *args, **kwargs)

    monkeypatch.setattr(backend, "beam_candidates", fails_after_the_first)
    before = degraded_count(live.url)
    histories = [[a, b, a, b] for a in range(1, 5) for b in range(11, 13)]  # 8 histories nothing has cached
    with httpx.Client(base_url=live.url, timeout=120) as c, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda h: c.post("/v1/recommend", json={"history": h, "k": 4}), histories))
    assert [a.status_code for a in answers] == [200] * len(histories), [a.text for a in answers]
    bodies = [a.json() for a in answers]
    for body in bodies:
        check_recommendation(body, 4)
    assert sum(calls) == len(histories) and max(calls) <= 3  # each history searched once, in batches of <= 3
    failed = sum(calls[1:])  # every request of a failed batch
    assert failed >= 1  # the burst took more than one batch, so some of it failed
    degraded = [b for b in bodies if b["decision"]["degraded"]]
    assert len(degraded) == failed and all(b["notes"] for b in degraded)
    assert all(it["llm_score"] is None for b in degraded for it in b["items"])
    assert degraded_count(live.url) - before == failed


class FlakyCloud(http.server.ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 in front of the service that misbehaves as ``mode`` says: ``ok`` forwards,
    ``drop`` closes the connection without an answer, ``late`` answers after ``delay`` seconds, ``malformed`` sends a
    200 with broken JSON, ``wrong`` a 200 with JSON of the wrong shape, ``truncated`` a body shorter than its
    Content-Length."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.upstream, self.mode, self.delay = upstream, "ok", 1.5
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    server: FlakyCloud

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        mode = self.server.mode
        if mode == "drop":
            self.close_connection = True
            return
        if mode == "late":
            time.sleep(self.server.delay)
        if mode == "malformed":
            return self._answer(200, b'{"items": [1, 2')
        if mode == "wrong":
            return self._answer(200, b'{"items": "all of them", "scores": null}')
        if mode == "truncated":
            self.close_connection = True
            return self._answer(200, b'{"items": [1, 2, 3], "sco', length=200)
        up = httpx.request(method, f"{self.server.upstream}{self.path}", content=body or None,
                           headers={"content-type": "application/json"} if body else None, timeout=60)
        self._answer(up.status_code, up.content)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


def test_device_session_against_a_flaky_cloud_degrades_and_recovers(live, service_store) -> None:
    from srm_device.adaptation import make_method
    from srm_device.client import HTTPCloudClient
    from srm_device.policies import make_policy
    from srm_device.policies.base import Threshold
    from srm_device.session import DeviceSession
    from srm_device.training.checkpoint import load_srm_with_data

    srm, _, _ = load_srm_with_data(service_store / "srm")
    cloud = FlakyCloud(live.url)
    client = HTTPCloudClient(cloud.url, timeout_s=5.0)
    session = DeviceSession(srm, make_method("duet_head", srm, rank=2), make_policy("always"),
                            Threshold(-np.inf, 0.0, 1.0), client, n_candidates=10, timeout_s=0.5)
    try:
        for item in (1, 2, 3, 4):
            session.observe(item)
        first = session.recommend(k=5)
        assert first.requested and not first.degraded and len(first.items) == 5
        assert session.refresh_parameters()
        good = session.payload.clone()
        for step, mode in enumerate(("drop", "late", "malformed", "wrong", "truncated")):
            cloud.mode = mode
            session.observe(5 + step)
            rec = session.recommend(k=5)  # never raises
            assert rec.degraded and rec.requested and len(rec.items) == 5, mode
            assert len(set(rec.items)) == 5 and all(1 <= i <= srm.n_items for i in rec.items), mode
            assert rec.notes, mode
            assert not session.refresh_parameters() and torch_equal(session.payload, good), mode
            if mode == "late":
                time.sleep(2 * cloud.delay)  # let the late answers arrive before the next call
        cloud.mode = "ok"
        back = session.recommend(k=5)
        assert back.requested and not back.degraded
        assert session.refresh_parameters()
    finally:
        session.close()
        client.close()
        cloud.stop()


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
