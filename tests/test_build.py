"""`tandem build` on the synthetic dataset: every stage, the manifest, skipping and rebuilding; then the device
simulation over real HTTP against a live server on the built store, and `tandem eval collab`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cyclic_sequences, write_atomic
from tests.live import Live

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def tiny_config(tmp: Path, **overrides):
    from pipelines.build import BuildConfig

    data = write_atomic(tmp / "cyc", cyclic_sequences(n_users=40, n_items=20, length=14))
    sft = tmp / "sft.yaml"
    sft.write_text("batch_size: 8\nmax_items: 10\nwindow_stride: 5\nlearning_rate: 0.003\n"
                   "model: {hidden_size: 32, num_heads: 1, num_kv_heads: 1, num_layers: 1, intermediate_size: 64}\n")
    values = dict(dataset=str(data), llm_config=str(sft), llm_epochs=4, srm_epochs=3, srm_patience=2,
                  srm_model=dict(hidden_size=16, inner_size=32, max_len=10),
                  paramgen=dict(recent_k=5, rank=2, epochs=1, n_prototypes=4, edit_dim=2),
                  collab=dict(epochs=2, prefixes_per_user=1), n_candidates=10, staleness=2, request_ratio=0.5)
    values.update(overrides)
    return BuildConfig(**values)


class CountingBuilder:
    """A Builder that records which stages actually ran."""

    @staticmethod
    def make(root: Path, cfg):
        from pipelines.build import Builder

        builder = Builder(root, cfg, progress=False)
        builder.ran = []
        for stage in ("sids", "srm", "paramgen", "collab", "thresholds"):
            fn = getattr(builder, f"run_{stage}")
            setattr(builder, f"run_{stage}", lambda fn=fn, stage=stage: (builder.ran.append(stage), fn())[1])
        start = builder.start_llm
        builder.start_llm = lambda: (builder.ran.append("llm"), start())[1]
        return builder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    os.environ["TANDEM_HOME"], old = str(tmp / "home"), os.environ.get("TANDEM_HOME")
    try:
        cfg = tiny_config(tmp)
        builder = CountingBuilder.make(tmp / "store", cfg)
        manifest = builder.build()
        yield tmp, cfg, builder, manifest
    finally:
        if old is None:
            os.environ.pop("TANDEM_HOME", None)
        else:
            os.environ["TANDEM_HOME"] = old


def test_build_writes_every_stage_and_skips_what_is_current(built) -> None:
    from tandem.artifacts import STAGES, Store

    tmp, cfg, first, manifest = built
    assert sorted(first.ran) == sorted(STAGES)
    store = Store(tmp / "store")
    assert set(manifest["stages"]) == set(STAGES) and manifest["dataset"] == cfg.dataset
    assert {"torch", "transformers", "python"} <= set(manifest["versions"])
    for entry in manifest["stages"].values():
        assert len(entry["hash"]) == 16 and entry["seconds"] >= 0
    th = store.read_thresholds()
    assert th.srm in ("srm", "collab") and th.n_candidates == 10 and "lsc4rec" in th.thresholds
    assert (store.collab_srm / "model.safetensors").is_file() and (store.llm / "tandem_llm.json").is_file()

    again = CountingBuilder.make(tmp / "store", cfg)
    assert again.build()["stages"] == manifest["stages"] and again.ran == []

    store.thresholds.write_text("{")  # corrupt: only this stage is built again
    third = CountingBuilder.make(tmp / "store", cfg)
    third.build()
    assert third.ran == ["thresholds"] and store.read_thresholds().n_candidates == 10


def test_changed_setting_rebuilds_only_what_depends_on_it(built, tmp_path) -> None:
    import shutil

    tmp, cfg, _, _ = built
    copy = tmp_path / "store"
    shutil.copytree(tmp / "store", copy)
    changed = cfg.model_copy(update={"collab": {"epochs": 1, "prefixes_per_user": 1}})
    builder = CountingBuilder.make(copy, changed)
    builder.build()
    assert builder.ran == ["collab", "thresholds"]


def test_build_refuses_bad_settings(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipelines", "build", "--out", str(tmp_path / "s"), "--n-candidates",
                           "500"], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2 and "n_candidates=500" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()
    listed = tmp_path / "list.yaml"
    listed.write_text("- dataset\n")
    proc = subprocess.run([sys.executable, "-m", "pipelines", "build", "--out", str(tmp_path / "s"), "--config",
                           str(listed)], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2 and "must be a mapping" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def live_store(built):
    from llm_cloud.service.app import create_app

    tmp = built[0]
    with Live(create_app(tmp / "store", api_keys=())) as server:
        yield server, tmp / "store"


def test_simulation_over_http(live_store) -> None:
    from pipelines.simulate import SimulateConfig, simulate
    from tandem.artifacts import Store

    server, root = live_store
    report = simulate(server.url, Store(root), SimulateConfig(policy="lsc4rec", request_ratio=0.5), progress=False)
    assert report["n_users"] == 40 and report["degraded_users"] == 0
    assert 0.0 <= report["request_ratio"] <= 1.0 and 0.0 <= report["metrics"]["ndcg@10"] <= 1.0
    assert report["metrics"]["hr@10"] > 0.1  # the cyclic rule is easy: random would hit 10/20 items by luck at most
    assert report["calls"]["/v1/candidates"] >= 40 and report["calls"]["/v1/parameters"] == 40
    assert report["calls"]["/v1/parameters/codebook"] == 1
    assert report["bytes_per_user"]["down"] > report["bytes_per_user"]["up"] > 0
    assert report["latency_ms"]["/v1/candidates"]["p99"] >= report["latency_ms"]["/v1/candidates"]["p50"] > 0
    from srm_device.client import HTTPCloudClient

    client = HTTPCloudClient(server.url)
    ids, scores = client.candidates(list(range(1, 21)) * 15, 5)  # 300 items: the client sends the last 200
    assert len(ids) == len(scores) == 5 and client.traffic.calls == {"/v1/candidates": 1}
    client.close()
    always = simulate(server.url, Store(root), SimulateConfig(policy="always", request_ratio=0.5, max_users=5),
                      progress=False)
    assert always["request_ratio"] == 1.0 and always["n_users"] == 5


def test_simulation_counts_cloud_timeouts_as_degraded(built) -> None:
    from llm_cloud.service.app import create_app
    from pipelines.simulate import SimulateConfig, simulate
    from tandem.artifacts import Store

    root = built[0] / "store"
    app = create_app(root, api_keys=())
    with Live(app) as server:
        backend = app.state.serving.stack.backend
        slow = backend.beam_candidates

        def late(*args, **kwargs):
            time.sleep(0.5)
            return slow(*args, **kwargs)

        backend.beam_candidates = late
        report = simulate(server.url, Store(root), SimulateConfig(policy="always", max_users=3, timeout_s=0.2,
                                                                  request_ratio=0.5), progress=False)
    assert report["n_users"] == 3 and report["degraded_users"] == 3
    assert 0.0 <= report["metrics"]["ndcg@10"] <= 1.0  # answered anyway, from what the device had


def test_simulate_cli_bad_input(live_store, tmp_path) -> None:
    server, root = live_store
    base = [sys.executable, "-m", "pipelines", "simulate", "--artifacts", str(root)]
    bad_ratio = subprocess.run(base + ["--server", server.url, "--request-ratio", "0.33"], capture_output=True,
                               text=True, env=ENV, timeout=120)
    assert bad_ratio.returncode == 2 and "0.33 was not calibrated" in bad_ratio.stderr
    down = subprocess.run(base + ["--server", "http://127.0.0.1:9", "--max-users", "2"], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert down.returncode == 2 and "not reachable" in down.stderr and "tandem serve" in down.stderr
    out = tmp_path / "sim.json"
    ok = subprocess.run(base + ["--server", server.url, "--max-users", "4", "--request-ratio", "0.5", "--json",
                                str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(out.read_text())["n_users"] == 4


def test_eval_collab_report(built, tmp_path) -> None:
    root = built[0] / "store"
    out, plot = tmp_path / "collab.json", tmp_path / "collab.png"
    proc = subprocess.run([sys.executable, "-m", "pipelines", "eval", "collab", "--artifacts", str(root), "--json",
                           str(out), "--plot", str(plot)], capture_output=True, text=True,
                          env={**ENV, "TANDEM_HOME": str(built[0] / "home")}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"llm", "gated", "sum", "sum2", "srm", "learned"} == set(report["fusion"]) == set(
        report["fusion_collab_srm"])
    assert report["llm_alone"] == report["fusion"]["llm"] and report["srm_alone"]["full_catalogue"]["ndcg@10"] >= 0
    assert report["best"]["ratio_to_better_single"] > 0 and set(report["policies"]) >= {"lsc4rec", "always"}
    assert plot.stat().st_size > 1000


def test_thresholds_and_server_see_the_same_policy_inputs(built, monkeypatch) -> None:
    """The policy thresholds are fitted on the inputs the server computes: same user vector (generated head through
    the codebook), same cached list, same features, for the same user and the same stale list."""
    import dataclasses

    import numpy as np

    import pipelines.thresholds as stage
    import srm_device.ranking as ranking
    from llm_cloud.service.serving import CacheEntry, TandemServing
    from llm_cloud.service.stack import load_stack
    from tandem.artifacts import Store
    from tandem.protocol import RecommendRequest

    tmp, cfg = built[0], built[1]
    fitted = {}
    real = stage.view_policy_inputs
    monkeypatch.setattr(stage, "view_policy_inputs",
                        lambda view, srm: fitted.setdefault("x", (view, real(view, srm)))[1])
    stack_th = stage.fit_thresholds(Store(tmp / "store"), cfg)
    view, x_fit = fitted["x"]
    serving = TandemServing(load_stack(tmp / "store"))
    assert serving.stack.thresholds.srm == stack_th.srm  # the server loads the SRM the thresholds were fitted for
    seen = []
    real_inputs = ranking.policy_inputs
    monkeypatch.setattr(ranking, "policy_inputs", lambda *a, **kw: seen.append(real_inputs(*a, **kw)) or seen[-1])
    for i in (0, 7, 23):
        history = [int(v) for v in view.histories[i]]
        stale = tuple(history[: max(1, len(history) - cfg.staleness)])
        serving.cache.put(stale, CacheEntry(view.stale_ids[i], view.stale_scores[i], False, cfg.n_candidates))
        resp = serving.recommend(RecommendRequest(history=history, k=5))
        assert resp.decision.score is not None and not resp.decision.degraded  # the policy ran on the stale list
        x_srv = seen[-1]
        for f in dataclasses.fields(x_fit):
            a, b = getattr(x_fit, f.name), getattr(x_srv, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_allclose(b[0], a[i], rtol=1e-5, atol=1e-6, err_msg=f.name)
            else:
                assert a == b, f.name


def test_every_device_method_round_trips_through_a_live_server(built, live_store, tmp_path) -> None:
    import shutil

    import httpx
    import numpy as np

    from llm_cloud.service.app import create_app
    from pipelines.cli.main import main
    from srm_device.adaptation import make_method
    from srm_device.client import HTTPCloudClient
    from srm_device.policies import make_policy
    from srm_device.policies.base import Threshold
    from srm_device.session import DeviceSession
    from srm_device.training.checkpoint import load_srm_with_data

    server, root = live_store  # a store without a multi-layer generator: duet is a 400 with the fix, a bad name 422
    resp = httpx.post(f"{server.url}/v1/parameters", json={"recent": [1, 2, 3], "method": "duet"})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "feature_not_enabled"
    assert "tandem train paramgen --edit layers" in resp.json()["error"]["message"]
    bad = httpx.get(f"{server.url}/v1/parameters/codebook?method=bogus")
    assert bad.status_code == 422 and "duet_head, duet" in bad.json()["error"]["message"]
    store = tmp_path / "store"
    shutil.copytree(root, store)
    assert main(["train", "paramgen", "--edit", "layers", "--srm", str(store / "srm"), "--out", str(store / "duet"),
                 "--epochs", "1", "--recent-k", "5", "--rank", "2", "--n-prototypes", "4", "--edit-dim", "2"]) == 0
    srm, _, _ = load_srm_with_data(store / "srm")
    with Live(create_app(store, api_keys=())) as live:
        for method in ("duet_head", "duet"):
            client = HTTPCloudClient(live.url, method=method)
            device = make_method(method, srm, rank=2)
            session = DeviceSession(srm, device, make_policy("always"), Threshold(-np.inf, 0.0, 1.0), client,
                                    n_candidates=10, timeout_s=30.0)
            for item in (1, 2, 3, 4, 5, 6):
                session.observe(item)
            static = session.recommend(k=10)
            assert session.refresh_parameters() and session.rejected_updates == 0, method
            assert session.payload.shape == (1, device.spec.n_params) and session.payload.abs().sum() > 0
            adapted = session.recommend(k=10)
            assert not adapted.degraded and not np.allclose(adapted.srm, static.srm, atol=1e-7), method
            assert client.traffic.calls["/v1/parameters/codebook"] == 1
            # the payload a device decodes is the server's flat parameters through the Persona codebook
            flat = httpx.post(f"{live.url}/v1/parameters", json={"recent": [2, 3, 4, 5, 6], "method": method,
                                                                  "encoding": "flat"}).json()
            assert flat["method"] == method and len(flat["flat"]) == flat["n_params"] == device.spec.n_params
            client.close()
            session.close()
