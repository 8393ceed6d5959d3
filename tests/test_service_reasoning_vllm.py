"""Reasoning served by vLLM (ThinkRec, arXiv 2505.15091): with ``engine="vllm"`` (what ``tandem serve --backend vllm``
loads) the service's ``POST /v1/explain`` and ``reasoning: true`` come from :class:`VLLMThinkRec`, and give the traces
and yes-probabilities of the transformers model. Skipped when vLLM (the ``[vllm]`` extra) is not installed; `make
test-vllm` runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (the [vllm] extra)")

for _key, _value in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
    os.environ.setdefault(_key, _value)

from tests.live import Live  # noqa: E402
from tests.test_service import build_store, check_recommendation  # noqa: E402
from tests.test_service_reasoning import SRM_WIDTH  # noqa: E402
from tests.test_thinkrec_vllm import _build  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("reasoning_vllm") / "store")


@pytest.fixture(scope="module")
def folder(store) -> Path:
    """The vLLM ThinkRec test folder (a random Qwen2 base vLLM's CPU attention takes, three LoRA adapters), with a
    user clustering as wide as the store's SRM."""
    from llm_cloud.thinkrec.experts import Clustering

    folder, _, _ = _build(store.parent / "thinkrec")
    centroids = np.random.default_rng(0).normal(size=(2, SRM_WIDTH))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    clusters = Clustering(k=2, centroids=centroids, labels=np.array([0, 1]), silhouette={2: 0.5})
    (folder / "clusters.json").write_text(json.dumps(clusters.to_json()))
    return folder


@pytest.fixture(scope="module")
def stacks(store, folder):
    """The same store twice: reasoning on transformers, and on vLLM (the LLM's lists on transformers in both)."""
    from llm_cloud.service.stack import load_stack
    from llm_cloud.thinkrec.serve import Reasoner

    reference = load_stack(store, thinkrec=folder)
    served = load_stack(store)
    served.reasoner = Reasoner.load(folder, served.dataset.catalogue, SRM_WIDTH, engine="vllm")
    yield reference, served
    served.close()
    reference.close()


def test_vllm_reasoner_is_what_load_stack_gives_the_vllm_backend(store, folder, monkeypatch) -> None:
    from llm_cloud.service import stack as stack_module
    from llm_cloud.thinkrec.vllm_scorer import VLLMThinkRec

    real = stack_module._load
    monkeypatch.setattr(stack_module, "_load", lambda store, backend, options: real(
        store, "transformers", options))  # the LLM's lists on transformers; only the reasoner's engine is tested
    loaded = stack_module.load_stack(store, backend="vllm", thinkrec=folder)
    try:
        assert isinstance(loaded.reasoner.model, VLLMThinkRec)
    finally:
        loaded.close()


def test_explain_and_reasoning_on_vllm_equal_transformers(stacks) -> None:
    import httpx

    from llm_cloud.service.app import create_app

    reference, served = stacks
    asks = [([1, 2, 3], 4), ([5, 6], 7), ([8, 9, 10, 11], 12)]
    with Live(create_app(stack=served, api_keys=())) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        for history, item in asks:
            got = c.post("/v1/explain", json={"history": history, "item_id": item, "max_tokens": 8})
            assert got.status_code == 200, got.text
            want = reference.reasoner.explain(reference.srm, history, item, 8)
            body = got.json()
            assert body["trace"] == want["trace"] and body["adapter"] == want["adapter"]
            np.testing.assert_allclose([body["p_yes"], body["p_yes_direct"]], [want["p_yes"], want["p_yes_direct"]],
                                       atol=1e-4)
        rec = c.post("/v1/recommend", json={"history": [1, 2, 3], "k": 3, "reasoning": True})
        assert rec.status_code == 200, rec.text
        body = rec.json()
        check_recommendation(body, 3)
        ids, titles = [it["item_id"] for it in body["items"]], [it["title"] for it in body["items"]]
        assert body["reasoning"] == reference.reasoner.recommend_trace(reference.srm, [1, 2, 3], ids, titles, 96)
