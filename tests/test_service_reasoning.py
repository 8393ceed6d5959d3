"""Reasoning in the service (ThinkRec, arXiv 2505.15091): ``POST /v1/explain`` and ``reasoning: true`` on
``POST /v1/recommend``, over the tiny service store with a tiny random ThinkRec model (general + 2 group adapters)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.live import Live
from tests.test_service import assert_error, build_store, check_recommendation
from tests.test_thinkrec import word_tokenizer

SRM_WIDTH = 16  # the hidden size of build_store's SASRec
ADAPTERS = {"general": "general", "g0": "experts/g0", "g1": "experts/g1"}


def build_thinkrec(folder: Path, hidden_size: int) -> Path:
    """A ThinkRec folder: a tiny random Llama base with the word tokenizer, three random LoRA adapters, a 2-group
    clustering of width ``hidden_size`` and keywords for a few items."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llm_cloud.thinkrec.experts import Clustering
    from llm_cloud.thinkrec.model import META

    torch.manual_seed(0)
    base = folder.parent / f"{folder.name}-base"
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=512, pad_token_id=0, eos_token_id=1)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(base)
    word_tokenizer().save_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    for seed, sub in enumerate(ADAPTERS.values()):  # each saved alone, as the ThinkRec pipeline writes them
        torch.manual_seed(seed)
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(folder / sub)
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(2, hidden_size))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    clusters = Clustering(k=2, centroids=centroids, labels=np.array([0, 1, 0]), silhouette={2: 0.5})
    (folder / "clusters.json").write_text(json.dumps(clusters.to_json()))
    (folder / "keywords.json").write_text(json.dumps({str(i): {"keywords": ["drama", "heist"], "generator": "stub"}
                                                      for i in (1, 2, 3)}))
    (folder / META).write_text(json.dumps({"base_model": str(base), "max_length": 400}))
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("reasoning") / "store")


@pytest.fixture(scope="module")
def thinkrec(store) -> Path:
    return build_thinkrec(store.parent / "thinkrec-model", SRM_WIDTH)


@pytest.fixture(scope="module")
def stack(store, thinkrec):
    from llm_cloud.service.stack import load_stack

    loaded = load_stack(store, thinkrec=thinkrec)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def plain(store):
    from llm_cloud.service.stack import load_stack

    loaded = load_stack(store)  # no --thinkrec and no <store>/thinkrec: no reasoner
    yield loaded
    loaded.close()


@pytest.fixture()
def serving(stack):
    from llm_cloud.service.serving import TandemServing

    handlers = TandemServing(stack)
    yield handlers
    handlers.close()  # its batcher thread and reasoning lane


@pytest.fixture()
def think_calls(stack, monkeypatch) -> list:
    """Counts the reasoner's ``think`` calls."""
    calls, model = [], stack.reasoner.model
    real = model.think

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "think", counted)
    return calls


def test_live_explain_and_recommend_with_reasoning(stack) -> None:
    import httpx

    from llm_cloud.service.app import create_app

    assert stack.reasoner is not None
    with Live(create_app(stack=stack, api_keys=())) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/v1/explain", json={"history": [1, 2, 3], "item_id": 4, "max_tokens": 8})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["item_id"] == 4 and body["title"] == "Movie 4" and isinstance(body["trace"], str)
        assert 0.0 <= body["p_yes"] <= 1.0 and 0.0 <= body["p_yes_direct"] <= 1.0
        assert body["adapter"] in ("general", "g0", "g1") or body["adapter"].startswith("mix_")
        assert body["route"] in ("group", "general", "mix")
        assert {"gate", "think", "score", "total"} <= set(body["timings_ms"])
        err = assert_error(c.post("/v1/explain", json={"history": [1], "item_id": 99}), 422, "item_id", "99")
        assert "unknown item ids" in err["message"]
        assert_error(c.post("/v1/explain", json={"history": [0, 2], "item_id": 3}), 422, "history", "0")
        assert_error(c.post("/v1/explain", json={"item_id": 0}), 422, "item_id")
        assert_error(c.post("/v1/explain", json={"item_id": 3, "max_tokens": 1000}), 422, "max_tokens")
        assert_error(c.post("/v1/explain", json={"item_id": 3, "mood": "happy"}), 422, "mood")

        req = {"history": [3, 4, 5], "k": 5}
        plain_body = c.post("/v1/recommend", json=req).json()
        check_recommendation(plain_body, 5)
        assert plain_body["reasoning"] is None and "reasoning" not in plain_body["timings_ms"]
        r = c.post("/v1/recommend", json={**req, "reasoning": True})
        assert r.status_code == 200, r.text
        body = r.json()
        check_recommendation(body, 5)
        assert body["items"] == plain_body["items"]
        top = body["items"][0]["title"]
        assert isinstance(body["reasoning"], str) and body["reasoning"].startswith(f"{top}: ")
        assert len(body["reasoning"]) > len(top) + 2 and body["timings_ms"]["reasoning"] > 0
        assert "/v1/explain" in c.get("/openapi.json").json()["paths"]


def test_reasoning_is_generated_only_when_asked(serving, think_calls) -> None:
    from tandem import protocol as p

    out = serving.recommend(p.RecommendRequest(user_id=2, k=3))
    assert out.reasoning is None and think_calls == []
    again = serving.recommend(p.RecommendRequest(user_id=2, k=3, reasoning=True))
    assert len(think_calls) == 1 and [it.item_id for it in again.items] == [it.item_id for it in out.items]
    prompt = think_calls[0][0][0]
    assert again.items[0].title in prompt and "First explain" in prompt  # the thinking prompt for the top item
    serving.candidates(p.CandidatesRequest(history=[1, 2], n=3))
    serving.recommend(p.RecommendRequest(history=[], k=2))
    assert len(think_calls) == 1


def test_explain_by_handler_empty_history_and_keywords(serving, think_calls) -> None:
    from tandem import protocol as p

    out = serving.explain(p.ExplainRequest(item_id=2, max_tokens=8))
    assert isinstance(out, p.ExplainResponse) and out.title == "Movie 2" and 0 <= out.p_yes <= 1
    assert len(think_calls) == 1
    prompt = think_calls[0][0][0]
    assert "Movie 2 (keywords: drama, heist)" in prompt and "(nothing yet)" in prompt


def test_explain_through_a_mixture_of_group_adapters(serving, monkeypatch) -> None:
    import llm_cloud.thinkrec.experts as experts_module
    from tandem import protocol as p

    monkeypatch.setattr(experts_module, "gate_weights", lambda user, centroids: np.array([0.7, 0.3]))  # neither sure
    out = serving.explain(p.ExplainRequest(history=[5, 6], item_id=7, max_tokens=8))  # nor uniform: a mixture
    assert out.route == "mix" and out.adapter.startswith("mix_") and 0 <= out.p_yes <= 1


def test_reasoner_failure_is_503(serving, stack, monkeypatch) -> None:
    from llm_cloud.service.errors import Unavailable
    from tandem import protocol as p

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(stack.reasoner.model, "think", boom)
    with pytest.raises(Unavailable, match="out of memory") as exc:
        serving.recommend(p.RecommendRequest(user_id=0, k=2, reasoning=True))
    assert exc.value.param == "reasoning"
    with pytest.raises(Unavailable, match="out of memory"):
        serving.explain(p.ExplainRequest(item_id=2))


def test_without_reasoner_both_are_a_4xx_saying_how(plain) -> None:
    from llm_cloud.service.errors import FeatureNotEnabled
    from llm_cloud.service.serving import TandemServing
    from tandem import protocol as p

    assert plain.reasoner is None
    serving = TandemServing(plain)
    for call, param in ((lambda: serving.recommend(p.RecommendRequest(user_id=0, reasoning=True)), "reasoning"),
                        (lambda: serving.explain(p.ExplainRequest(history=[1], item_id=2)), None)):
        with pytest.raises(FeatureNotEnabled) as exc:
            call()
        assert exc.value.status == 400 and exc.value.type == "feature_not_enabled" and exc.value.param == param
        assert "tandem eval thinkrec" in exc.value.message and "--thinkrec OUT/model" in exc.value.message
    assert serving.recommend(p.RecommendRequest(user_id=0, k=2)).reasoning is None


def test_thinkrec_folder_errors_and_default(store, thinkrec, tmp_path) -> None:
    from llm_cloud.service.stack import load_stack, thinkrec_folder
    from llm_cloud.thinkrec.serve import Reasoner
    from tandem.artifacts import Store
    from tandem.errors import TandemError

    missing = tmp_path / "nowhere"
    with pytest.raises(TandemError) as exc:
        load_stack(store, thinkrec=missing)
    msg = str(exc.value)
    assert str(missing) in msg and "tandem eval thinkrec" in msg and "\n" not in msg
    # a thinkrec.json whose base model is gone: one line naming the folder
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "thinkrec.json").write_text(json.dumps({"base_model": str(tmp_path / "no-base")}))
    with pytest.raises(TandemError) as exc:
        Reasoner.load(broken, catalogue=None)
    assert str(broken) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(TandemError, match="width 16 but the served SRM has width 8"):
        Reasoner.load(thinkrec, catalogue=None, hidden_size=8)
    # the store's own thinkrec/ is served by default, only when it holds a built model
    fake = Store(tmp_path / "s")
    assert thinkrec_folder(fake, None) is None
    (fake.root / "thinkrec").mkdir(parents=True)
    assert thinkrec_folder(fake, None) is None
    (fake.root / "thinkrec" / "thinkrec.json").write_text("{}")
    assert thinkrec_folder(fake, None) == fake.root / "thinkrec"
    assert thinkrec_folder(fake, str(thinkrec)) == thinkrec


def test_serve_cli_passes_thinkrec(store, thinkrec, monkeypatch) -> None:
    import uvicorn

    import llm_cloud.service.stack as stack_module
    from pipelines.cli.main import main

    seen = []

    def fake_load(root, backend, **kwargs):
        seen.append(kwargs)
        raise stack_module.TandemError("stop here")

    monkeypatch.setattr(stack_module, "load_stack", fake_load)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    assert main(["serve", "--artifacts", str(store), "--thinkrec", str(thinkrec)]) == 2
    assert seen == [{"thinkrec": str(thinkrec)}]
