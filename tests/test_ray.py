"""Past one machine on a local Ray cluster: candidate lists on Ray Data (`tandem candidates --engine ray`) equal the
local engine's list for list and a killed job resumes; the service on Ray Serve answers as `tandem serve` does and a
replica killed under load is replaced with no failed request. Skipped when Ray (the ``[ray]`` extra) is not
installed; `make test-ray` runs them in their own venv."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra; `make test-ray` runs these tests)")

from tests.live import Live, free_port, serve_process  # noqa: E402
from tests.test_service import ENV, check_recommendation  # noqa: E402

TANDEM = [sys.executable, "-m", "pipelines.cli.main"]


def candidates(store: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [*TANDEM, "candidates", "--llm", str(store / "llm"), "--out", str(out), "--n", "10", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def read_cache(folder: Path) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
    from pipelines.candidate_cache import CandidateCache

    return dict(CandidateCache(folder)._load())


def test_ray_data_lists_equal_the_local_engine_and_a_killed_job_resumes(service_store, tmp_path) -> None:
    local = finish(candidates(service_store, tmp_path / "local", "--batch-size", "4"))
    assert local["made"] == local["users"] > 0
    ray_run = finish(candidates(service_store, tmp_path / "ray", "--engine", "ray", "--actors", "2",
                                "--batch-size", "4"))
    assert ray_run["made"] == local["made"] and ray_run["engine"] == "ray"
    ref, got = read_cache(tmp_path / "local"), read_cache(tmp_path / "ray")
    assert set(ref) == set(got)
    for key, (ids, scores) in ref.items():
        assert np.array_equal(got[key][0], ids)  # the same items in the same order
        assert np.allclose(got[key][1], scores, atol=1e-4)

    # killed after its first shard (SIGKILL to the driver and the local cluster it started), then run again
    folder = tmp_path / "killed"
    proc = candidates(service_store, folder, "--engine", "ray", "--batch-size", "1", "--split", "full")
    deadline = time.time() + 300
    while not list(folder.glob("shard-*.npz")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no shard written in 300 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    written = len(list(folder.glob("shard-*.npz")))
    assert 1 <= written < local["users"], f"killed too late: {written} shards of {local['users']}"
    again = finish(candidates(service_store, folder, "--engine", "ray", "--batch-size", "1", "--split", "full"))
    assert again["reused"] == written and again["made"] == local["users"] - written
    full = finish(candidates(service_store, tmp_path / "full", "--split", "full"))
    ref, got = read_cache(tmp_path / "full"), read_cache(folder)
    assert set(ref) == set(got) and all(np.array_equal(got[k][0], ref[k][0]) for k in ref)
    assert full["made"] == local["users"]


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def test_the_builds_collab_stage_on_ray_makes_the_local_lists(service_store, tmp_path, cluster) -> None:
    """What `tandem build --engine ray` runs for its collab stage: the same lists and the same fine-tuned SRM (the
    engine joins the test's local cluster, as it joins one that `ray start` made)."""
    from pipelines.candidate_cache import EngineOptions
    from pipelines.collab import train_collab
    from srm_device.training.config import CollabConfig

    cfg = CollabConfig(n_candidates=10, prefixes_per_user=2, epochs=2, threads=1)
    reports = {kind: train_collab(service_store / "llm", service_store / "srm", tmp_path / kind, cfg, progress=False,
                                  engine=EngineOptions(kind, actors=1, batch_size=16))
               for kind in ("local", "ray")}
    ref, got = read_cache(tmp_path / "local" / "candidates"), read_cache(tmp_path / "ray" / "candidates")
    assert set(ref) == set(got) and all(np.array_equal(got[k][0], ref[k][0]) for k in ref)
    assert reports["ray"]["cache"]["misses"] == reports["local"]["cache"]["misses"] > 0
    for arm in ("llm", "srm", "collab"):  # the same in-list validation metrics before and after fine-tuning
        assert reports["ray"]["valid_in_list"][arm] == pytest.approx(reports["local"]["valid_in_list"][arm], abs=1e-6)


def test_the_engine_flags_need_the_ray_engine(service_store, tmp_path) -> None:
    proc = candidates(service_store, tmp_path / "c", "--actors", "2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--actors need --engine ray" in err


def replica_actors(ray) -> list[str]:
    """Names of the live replica actors (from the GCS: no dashboard needed)."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and "TandemReplica" in a["name"])


def test_serve_answers_as_tandem_serve_and_replaces_a_killed_replica(service_store, cluster) -> None:
    import httpx

    from llm_cloud.service.app import create_app
    from pipelines import ray_serve

    port = free_port()
    ray_serve.run(service_store, "127.0.0.1", port, block=False, replicas=2)
    url = f"http://127.0.0.1:{port}"
    names = replica_actors(cluster)
    assert len(names) == 2

    with httpx.Client(base_url=url, timeout=60) as client, Live(create_app(service_store, api_keys=())) as plain:
        seen = set()
        for user in range(6):
            body = {"user_id": user, "k": 5}
            served = client.post("/v1/recommend", json=body)
            assert served.status_code == 200, served.text
            check_recommendation(served.json(), 5)
            reference = httpx.post(f"{plain.url}/v1/recommend", json=body, timeout=60).json()
            assert [i["item_id"] for i in served.json()["items"]] == [i["item_id"] for i in reference["items"]]
            assert np.allclose([i["score"] for i in served.json()["items"]],
                               [i["score"] for i in reference["items"]], atol=1e-5)
            seen.add(served.headers["x-tandem-replica"])
        for _ in range(20):  # readiness and metrics answer on every replica
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.headers["x-tandem-replica"]
            seen.add(ready.headers["x-tandem-replica"])
            if len(seen) == 2:
                break
        assert len(seen) == 2, f"the proxy reached only {seen}"
        assert "tandem_requests_total" in client.get("/metrics").text

    # load from 3 client threads, each retrying a failed request for up to 20 s; one replica is killed mid-load
    failures, retried, done, stop = [], [0], [0], threading.Event()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                body, deadline = {"user_id": int(rng.integers(0, 30)), "k": 5}, time.time() + 20
                while True:
                    try:
                        r = client.post("/v1/recommend", json=body)
                        if r.status_code == 200:
                            break
                        reason = f"{r.status_code} {r.text[:200]}"
                    except httpx.HTTPError as exc:
                        reason = repr(exc)
                    if time.time() > deadline:
                        failures.append(reason)
                        break
                    retried[0] += 1
                    time.sleep(0.2)
                done[0] += 1

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    killed = names[0]
    cluster.kill(cluster.get_actor(killed, namespace="serve"), no_restart=True)
    deadline = time.time() + 120
    while True:
        now = replica_actors(cluster)
        if len(now) == 2 and killed not in now:
            break
        assert time.time() < deadline, f"no replacement replica after 120 s: {now}"
        time.sleep(0.5)
    time.sleep(3)  # the new replica takes traffic too
    stop.set()
    for t in threads:
        t.join(60)
    assert not failures, f"{len(failures)} requests failed in the retry window: {failures[:3]}"
    assert done[0] > 20
    print(f"requests {done[0]}, retried {retried[0]}, replicas {names} -> {replica_actors(cluster)}")


def test_tandem_serve_engine_ray_serves_and_stops(service_store, tmp_path) -> None:
    """The command itself: `tandem serve --engine ray` on a local cluster of its own answers through Serve's proxy,
    and SIGTERM takes it down."""
    import httpx

    port = free_port()
    cmd = [*TANDEM, "serve", "--engine", "ray", "--replicas", "1", "--port", str(port), "--artifacts",
           str(service_store), "--log-level", "warning"]
    with serve_process(cmd, port, tmp_path / "serve.log", env=ENV, health="/readyz") as url:
        r = httpx.post(f"{url}/v1/recommend", json={"user_id": 1, "k": 3}, timeout=60)
        assert r.status_code == 200 and r.headers["x-tandem-replica"], r.text
        check_recommendation(r.json(), 3)
    assert "deploying 1 replica(s)" in (tmp_path / "serve.log").read_text()
