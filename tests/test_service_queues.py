"""Micro-batching, backpressure and deadlines, on live servers over the tiny store: concurrent fresh-list requests
share batched searches (the same lists as one at a time), a full queue answers 429 with Retry-After, a slow LLM or
reasoning model meets the deadline with a degraded answer or a 503, and the server logs what went wrong."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from llm_cloud.service.queue_config import QueueConfig
from tests.live import Live
from tests.test_service import assert_error, check_recommendation


@pytest.fixture(scope="module")
def stack(service_store):
    from llm_cloud.service.stack import load_stack

    loaded = load_stack(service_store)
    yield loaded
    loaded.close()


@contextmanager
def serve(stack, **queues):
    from llm_cloud.service.app import create_app

    app = create_app(stack=stack, api_keys=(), queues=QueueConfig(**queues))
    with Live(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        server.app = app
        yield server, client


class Gate:
    """Wraps a slow call: each call records its batch size, says it has started, and waits for ``release``."""

    def __init__(self, real, hold: bool = True) -> None:
        self.real, self.calls, self.started = real, [], threading.Event()
        self.opened = threading.Event()
        if not hold:
            self.opened.set()

    def __call__(self, *args, **kwargs):
        self.calls.append(len(args[0]) if args and isinstance(args[0], list) else 1)
        self.started.set()
        assert self.opened.wait(60), "the test never opened the gate"
        return self.real(*args, **kwargs)

    def release(self) -> None:
        self.opened.set()


def metric(url: str, name: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " ") or
               line.startswith(name + "{"))


def wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_concurrent_requests_are_batched_shared_and_equal_to_single_searches(stack, monkeypatch) -> None:
    backend = stack.backend
    histories = [[a, a + 1, a + 2] for a in range(1, 13, 2)]  # 6 distinct histories nothing has cached
    alone = {tuple(h): backend.beam_candidates([np.asarray(h)], 20)[0] for h in histories}
    gate = Gate(backend.beam_candidates, hold=False)
    monkeypatch.setattr(backend, "beam_candidates", gate)
    bodies = histories + histories[:2]  # two identical requests in flight share a search
    with serve(stack, max_batch=8, max_wait_ms=300) as (server, client), ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda h: client.post("/v1/candidates", json={"history": h, "n": 20}), bodies))
        shared = metric(server.url, "tandem_llm_shared_total")
        batch_count = metric(server.url, "tandem_llm_batch_size_count")
        assert metric(server.url, "tandem_llm_queue_wait_seconds_count") == sum(gate.calls)
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    assert sum(gate.calls) == len(histories)  # each distinct history searched once, duplicates shared or cached
    assert max(gate.calls) > 1 and batch_count == len(gate.calls) < len(histories)  # real batches
    hits = sum(a.json()["cache_hit"] for a in answers)
    assert shared + hits >= 2
    for h, answer in zip(bodies, answers):
        got, ref = answer.json(), alone[tuple(h)]
        assert got["items"] == list(ref.items)
        np.testing.assert_allclose(got["scores"], ref.scores, atol=1e-4)


def test_full_queue_answers_429_with_retry_after(stack, monkeypatch) -> None:
    assert stack.n_items >= 20  # the histories below use ids 1..20
    gate = Gate(stack.backend.beam_candidates)
    monkeypatch.setattr(stack.backend, "beam_candidates", gate)
    with serve(stack, max_batch=1, max_queue=2, max_wait_ms=0) as (server, client), ThreadPoolExecutor(3) as pool:
        try:
            busy = [pool.submit(client.post, "/v1/candidates", json={"history": [1, 2], "n": 10})]
            assert gate.started.wait(30)  # the worker holds the first request's search
            busy += [pool.submit(client.post, "/v1/candidates", json={"history": [3 + 2 * i, 4 + 2 * i], "n": 10})
                     for i in range(2)]
            wait_for(lambda: metric(server.url, "tandem_llm_queue_depth") == 2)  # the queue is full
            for route, body in (("/v1/candidates", {"history": [7, 8], "n": 10}),
                                ("/v1/recommend", {"history": [9, 10, 11], "k": 5})):
                refused = client.post(route, json=body)
                err = assert_error(refused, 429, fragment="queue is full")
                assert err["type"] == "rate_limit_error"
                assert int(refused.headers["retry-after"]) >= 1
            assert metric(server.url, "tandem_overloaded_total") == 2
        finally:
            gate.release()
        assert [f.result().status_code for f in busy] == [200, 200, 200]  # the queued ones are served


def test_slow_llm_meets_the_deadline_degraded_and_its_list_is_cached(stack, monkeypatch, caplog) -> None:
    gate = Gate(stack.backend.beam_candidates)
    monkeypatch.setattr(stack.backend, "beam_candidates", gate)
    caplog.set_level(logging.INFO, logger="tandem")
    with serve(stack, deadline_ms=400) as (server, client):
        try:
            t0 = time.monotonic()
            rec = client.post("/v1/recommend", json={"history": [12, 13, 14], "k": 5})
            rec_s = time.monotonic() - t0
            t0 = time.monotonic()
            cand = client.post("/v1/candidates", json={"history": [15, 16], "n": 10})
            cand_s = time.monotonic() - t0
            assert metric(server.url, "tandem_deadline_exceeded_total") == 2
        finally:
            gate.release()
        assert rec.status_code == 200, rec.text
        body = rec.json()
        check_recommendation(body, 5)
        assert body["decision"]["degraded"] and "deadline" in " ".join(body["notes"])
        assert_error(cand, 503, fragment="deadline")
        assert rec_s < 3.0 and cand_s < 3.0  # 0.4 s deadline plus ranking, far below the held search
        # the abandoned searches still finish and fill the cache
        wait_for(lambda: client.post("/v1/candidates", json={"history": [15, 16], "n": 10}).json()["cache_hit"])
    warned = [r for r in caplog.records if r.name == "tandem.service" and "deadline" in r.getMessage()]
    assert len(warned) >= 2
    access = [r for r in caplog.records if r.name == "tandem.access"]
    assert any('"POST /v1/candidates" 503' in r.getMessage() for r in access)
    assert any('"POST /v1/recommend" 200' in r.getMessage() for r in access)


def test_failing_llm_is_logged_with_its_traceback_and_one_access_line_per_request(stack, monkeypatch,
                                                                                    caplog) -> None:
    def boom(histories, n):
        raise RuntimeError("GPU on fire")

    monkeypatch.setattr(stack.backend, "beam_candidates", boom)
    caplog.set_level(logging.INFO, logger="tandem")
    with serve(stack) as (server, client):
        rec = client.post("/v1/recommend", json={"history": [17, 18, 19], "k": 3})
        cand = client.post("/v1/candidates", json={"history": [19, 20], "n": 5})
        client.get("/healthz")
    assert rec.status_code == 200 and rec.json()["decision"]["degraded"]
    assert_error(cand, 503, fragment="GPU on fire")
    tracebacks = [r for r in caplog.records if r.name == "tandem.service" and r.exc_info]
    assert len(tracebacks) >= 2 and all("GPU on fire" in str(r.exc_info[1]) for r in tracebacks)
    access = [r.getMessage() for r in caplog.records if r.name == "tandem.access"]
    assert len([m for m in access if "/v1/recommend" in m]) == 1
    assert len([m for m in access if "/v1/candidates" in m]) == 1
    assert len([m for m in access if "/healthz" in m]) == 1


class SlowReasoner:
    """Stands in for a ThinkRec model that thinks for as long as the test holds it."""

    def __init__(self) -> None:
        self.gate = Gate(lambda *args: {"trace": "because", "p_yes": 0.9, "p_yes_direct": 0.5, "adapter": "general",
                                        "route": None, "timings_ms": {}})

    def explain(self, srm, history, item, max_tokens=96):
        return self.gate(srm, history, item, max_tokens)

    def recommend_trace(self, srm, history, items, titles, max_tokens=96):
        self.gate(srm, history, items)
        return f"{titles[0]}: because"


def test_slow_reasoning_has_a_deadline_and_a_bounded_lane(stack, monkeypatch) -> None:
    slow = SlowReasoner()
    monkeypatch.setattr(stack, "reasoner", slow)
    with serve(stack, deadline_ms=300, reasoning_workers=1, reasoning_queue=1) as (server, client):
        try:
            t0 = time.monotonic()
            late = client.post("/v1/explain", json={"history": [1, 2, 3], "item_id": 4})
            assert time.monotonic() - t0 < 3.0
            assert_error(late, 503, fragment="deadline")
            # the late call still holds the lane's one slot: the next is refused at once, not queued behind it
            busy = client.post("/v1/explain", json={"history": [1, 2, 3], "item_id": 5})
            assert_error(busy, 429, fragment="reasoning queue is full")
            assert int(busy.headers["retry-after"]) >= 1
        finally:
            slow.gate.release()
        wait_for(lambda: metric(server.url, "tandem_overloaded_total") == 1)
        slow.gate = Gate(slow.gate.real)  # a new hold for the recommendation's trace
        try:
            rec = client.post("/v1/recommend", json={"history": [1, 2, 3], "k": 3, "reasoning": True})
        finally:
            slow.gate.release()
        assert rec.status_code == 200, rec.text
        body = rec.json()
        check_recommendation(body, 3)
        assert body["reasoning"] is None and body["decision"]["degraded"]
        assert any("deadline" in note for note in body["notes"])
        # once the held call has returned, the lane is free again
        wait_for(lambda: client.post("/v1/explain", json={"history": [1, 2, 3], "item_id": 6}).status_code == 200)
        fast = client.post("/v1/explain", json={"history": [1, 2, 3], "item_id": 6})
        assert fast.status_code == 200 and fast.json()["trace"] == "because"


def test_search_in_its_own_process_gives_the_same_lists_and_survives_its_death(stack) -> None:
    import os
    import signal

    histories = [[2, 4, 6], [3, 5], [7, 9, 11, 13]]
    alone = [stack.backend.beam_candidates([np.asarray(h)], 20)[0] for h in histories]
    with serve(stack, llm_process=True) as (server, client), ThreadPoolExecutor(3) as pool:
        worker = server.app.state.serving.llm_process
        assert worker is not None and worker.pid != os.getpid()
        answers = list(pool.map(lambda h: client.post("/v1/candidates", json={"history": h, "n": 20}), histories))
        for answer, ref in zip(answers, alone):
            assert answer.status_code == 200, answer.text
            assert answer.json()["items"] == list(ref.items)
            np.testing.assert_allclose(answer.json()["scores"], ref.scores, atol=1e-4)
        bad = client.post("/v1/candidates", json={"history": [1, 2], "n": 0})
        assert bad.status_code == 422
        first = worker.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not worker._proc.is_alive())
        # the next search finds the process gone, starts a new one, and answers
        again = client.post("/v1/candidates", json={"history": [8, 10], "n": 10})
        assert again.status_code == 200, again.text
        assert worker.pid not in (None, first)
        rec = client.post("/v1/recommend", json={"history": [12, 14, 16], "k": 5})
        assert rec.status_code == 200 and not rec.json()["decision"]["degraded"]


def test_search_process_that_cannot_load_says_why(tmp_path) -> None:
    from llm_cloud.service.llm_process import LLMProcess

    proc = LLMProcess(tmp_path / "no-such-llm")  # starts loading at once; ready() waits for the answer
    with pytest.raises(RuntimeError, match="could not load .*no-such-llm"):
        proc.ready()
    proc.close()
