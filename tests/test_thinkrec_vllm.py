"""ThinkRec (arXiv 2505.15091) served by vLLM (:class:`VLLMThinkRec`) gives what the transformers model
(:class:`ThinkRecModel`) gives: p(yes) for the general adapter, a group expert, the base model and an expert mixture
(a pre-merged folder in vLLM, PEFT's in-memory "cat" mixture in transformers), and the same greedy traces. Skipped when
vLLM (the ``[vllm]`` extra) is not installed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (the [vllm] extra)")

for _key, _value in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
    os.environ.setdefault(_key, _value)

from llm_cloud.thinkrec.experts import Clustering  # noqa: E402
from llm_cloud.thinkrec.prompts import rec_prompt  # noqa: E402
from tests.test_thinkrec import word_tokenizer  # noqa: E402

ADAPTERS = {"general": (4, 8, 1), "experts/g0": (4, 8, 2), "experts/g1": (8, 4, 3)}  # (r, alpha, seed)
PROMPTS = [rec_prompt(["movie liked", "user movie because"], "target movie"),
           rec_prompt(["liked liked movie"], "user target", think=True),
           rec_prompt([], "movie because")]
TRACES = ["because user liked movie", None, "target movie"]


def _build(root: Path) -> tuple[Path, Path, Clustering]:
    """A ThinkRec folder on a random 1-layer Qwen2 (head size 32, vocabulary = the word tokenizer's 32 words, no EOS
    so both engines always generate every token asked for; initializer_range 0.3 so the greedy text and p(yes) vary
    from token to token and adapter to adapter); the tokenizer in its own folder (``thinkrec.json``'s
    ``tokenizer``), since beside a Qwen2 config transformers would load it as a Qwen2Tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, bos_token_id=None,
                      eos_token_id=None, pad_token_id=0, initializer_range=0.3)
    base, folder = root / "base", root / "thinkrec"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(base)
    word_tokenizer().save_pretrained(root / "tokenizer")
    for sub, (r, alpha, seed) in ADAPTERS.items():
        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                               LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False, lora_dropout=0.0))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape) * 0.3)
        model.save_pretrained(folder / sub)
    clustering = Clustering(k=2, centroids=np.eye(2), labels=np.array([0, 1]), silhouette={2: 0.5})
    (folder / "clusters.json").write_text(json.dumps(clustering.to_json()))
    (folder / "thinkrec.json").write_text(json.dumps({"base_model": str(base), "max_length": 200,
                                                      "tokenizer": str(root / "tokenizer")}))
    return folder, base, clustering


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llm_cloud.thinkrec.model import ThinkRecModel
    from llm_cloud.thinkrec.vllm_scorer import VLLMThinkRec

    folder, base, clustering = _build(tmp_path_factory.mktemp("thinkrec_vllm"))
    tok = word_tokenizer()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(folder / "general"),
                                     adapter_name="general")
    for name in ("g0", "g1"):
        peft.load_adapter(str(folder / "experts" / name), adapter_name=name)
    reference = ThinkRecModel(peft, tok, 200, clustering, ["g0", "g1"])
    plain = ThinkRecModel(AutoModelForCausalLM.from_pretrained(base), tok, 200, None, [])  # the base model alone
    served = VLLMThinkRec(folder, max_model_len=256)
    try:
        yield reference, plain, served
    finally:
        served.close()


def test_p_yes_matches_transformers_for_general_group_base_and_mixtures(models) -> None:
    reference, plain, served = models
    assert served.max_lora_rank == 16  # a mixture has rank 4 + 8 = 12; vLLM takes 1, 8, 16, 32, ...
    seen = {}
    for adapter in ("general", "g0", "g1"):
        want = reference.p_yes(PROMPTS, TRACES, adapter=adapter)
        got = served.p_yes(PROMPTS, TRACES, adapter=adapter)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=adapter)
        seen[adapter] = got
    np.testing.assert_allclose(served.p_yes(PROMPTS, TRACES, adapter=None), plain.p_yes(PROMPTS, TRACES, adapter=None),
                               atol=1e-4)

    weights = [0.7, 0.3]
    name = served.mixture(weights)
    assert name == reference.mixtures.get(["g0", "g1"], weights)  # same key, same name
    assert served.mixture([0.701, 0.299]) == name and served.mixtures.writes == 1  # reused after rounding
    mixed = served.p_yes(PROMPTS, TRACES, adapter=name)
    np.testing.assert_allclose(mixed, reference.p_yes(PROMPTS, TRACES, adapter=name), atol=1e-4)

    # a user between the two centroids: max gate weight just under 0.8 (not one group), entropy < 0.95 log 2
    angle = math.acos(0.135 / math.sqrt(2)) - math.pi / 4  # cos - sin = 0.135 -> weights ~ (0.794, 0.206)
    user = np.array([math.cos(angle), math.sin(angle)])
    (want_name, want_route), (got_name, got_route) = reference.adapter_for(user), served.adapter_for(user)
    assert want_route.kind == got_route.kind == "mix" and want_name == got_name
    np.testing.assert_allclose(served.p_yes(PROMPTS, adapter=got_name), reference.p_yes(PROMPTS, adapter=want_name),
                               atol=1e-4)
    assert served.adapter_for(np.array([1.0, 0.05]))[0] == reference.adapter_for(np.array([1.0, 0.05]))[0] == "g0"
    assert served.adapter_for(None)[0] == "general"
    for a, b in [("general", "g0"), ("g0", "g1"), ("g0", name)]:
        assert np.abs(seen.get(a, mixed) - seen.get(b, mixed)).max() > 1e-3  # the adapters really differ


def test_think_matches_transformers_greedy_text(models) -> None:
    reference, _, served = models
    prompts = PROMPTS[:2]
    for adapter in ("general", "g0", "g1"):
        want = reference.think(prompts, adapter=adapter, max_new_tokens=6)
        got = served.think(prompts, adapter=adapter, max_new_tokens=6)
        assert got == want, adapter
        assert any(got)  # not vacuous: text was generated


def test_eval_thinkrec_arms_score_the_same_on_vllm(tmp_path_factory) -> None:
    """``tandem eval thinkrec --backend vllm`` scores its arms (the bare adapter, routed experts, thinking with the
    general adapter) as the transformers engine does."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llm_cloud.thinkrec.engines import load_model
    from llm_cloud.thinkrec.samples import Sample
    from pipelines.thinkrec import score_arm

    folder, base, _ = _build(tmp_path_factory.mktemp("eval_vllm"))
    torch.manual_seed(4)
    bare = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                     lora_dropout=0.0))
    with torch.no_grad():
        for name, p in bare.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape) * 0.3)
    bare.save_pretrained(folder.parent / "bare")
    lines = ["movie liked", "user movie because", "target movie", "liked liked movie", "movie because"]

    def prompt(history, item, think=False):
        return rec_prompt([lines[i % len(lines)] for i in history], lines[item % len(lines)], think=think)

    pipe = SimpleNamespace(cfg=SimpleNamespace(trace_tokens=6), texts=SimpleNamespace(prompt=prompt),
                           user_vectors=lambda hist: {u: np.array([1.0, 0.05]) if u % 2 == 0 else
                                                      np.array([0.05, 1.0]) for u in hist})
    samples = [Sample(user=u, history=(1, 2, 3, 4)[: u + 1], item=u + 2, label=u % 2) for u in range(4)]
    arms = {"bare": (False, False, "bare"), "experts": (False, True, None), "think": (True, False, "general")}
    reference = load_model(folder, "transformers", {"bare": folder.parent / "bare"})
    served = load_model(folder, "vllm", {"bare": folder.parent / "bare"})
    try:
        got = {k: score_arm(pipe, served, samples, *a) for k, a in arms.items()}
        want = {k: score_arm(pipe, reference, samples, *a) for k, a in arms.items()}
    finally:
        served.close()
    for name in arms:
        np.testing.assert_allclose(got[name]["scores"], want[name]["scores"], atol=1e-4, err_msg=name)
        assert got[name]["thoughts"] == want[name]["thoughts"] and got[name]["routes"] == want[name]["routes"]
    assert set(got["experts"]["routes"].values()) == {"group"} and any(got["think"]["thoughts"])
    assert np.abs(np.array(got["bare"]["scores"]) - np.array(got["experts"]["scores"])).max() > 1e-3
