"""Tests for ThinkRec expert fusion (arXiv 2505.15091): clustering, gating, routing and exact LoRA mixtures."""

from __future__ import annotations

import json
import math

import numpy as np
import peft
import pytest
import torch
import transformers

from llm_cloud.thinkrec.experts import (  # noqa: E402
    Clustering,
    MixtureCache,
    add_mixture,
    choose_clusters,
    entropy,
    gate_weights,
    route,
    save_mixture,
)
from tandem.errors import TandemError  # noqa: E402
from tandem.io import atomic_write_json  # noqa: E402

SEED = 1234
TARGETS = ["q_proj", "v_proj"]


# ------------------------------------------------------------------------------------------------------------ helpers
def _base() -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    torch.manual_seed(SEED)
    return transformers.LlamaForCausalLM(cfg).eval()


def _lora(r: int, alpha: int) -> peft.LoraConfig:
    return peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0)


def _experts(specs: list[tuple[int, int]]) -> peft.PeftModel:
    """A tiny Llama with adapters g0, g1, ... of the given (rank, alpha)."""
    torch.manual_seed(SEED + 1)
    model = peft.get_peft_model(_base(), _lora(*specs[0]), adapter_name="g0")
    for i, spec in enumerate(specs[1:], start=1):
        model.add_adapter(f"g{i}", _lora(*spec))
    return model.eval()


MIXED_SPECS = [(4, 8), (2, 16), (8, 4)]  # different ranks and alphas: scalings 2, 8, 0.5


def _lora_layers(model: peft.PeftModel) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {n.removeprefix(prefix): m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def _delta(layer: torch.nn.Module, name: str) -> torch.Tensor:
    """ΔW = scaling * B @ A, shape (out, in)."""
    return layer.scaling[name] * layer.lora_B[name].weight @ layer.lora_A[name].weight


def _expected_deltas(model: peft.PeftModel, adapters: list[str], weights: list[float]) -> dict[str, torch.Tensor]:
    return {n: sum(w * _delta(m, a) for a, w in zip(adapters, weights)) for n, m in _lora_layers(model).items()}


def _ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, 64, (2, 9), generator=g)  # (B, T)


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model(input_ids=_ids()).logits  # (B, T, V)


# ------------------------------------------------------------------------------------------------------ LoRA mixtures
@torch.no_grad()
def test_mixture_is_exact_weighted_sum_of_deltas_with_different_rank_and_alpha():
    model = _experts(MIXED_SPECS)
    adapters, weights = ["g0", "g1", "g2"], [0.5, 0.3, 0.2]
    expected = _expected_deltas(model, adapters, weights)
    name = add_mixture(model, adapters, weights, "mix")
    layers = _lora_layers(model)
    assert len(layers) == 4  # q_proj and v_proj in two layers
    for mod_name, layer in layers.items():
        assert layer.lora_A["mix"].weight.shape[0] == 4 + 2 + 8  # rank is the sum of ranks
        assert torch.allclose(_delta(layer, "mix"), expected[mod_name], atol=1e-5), mod_name
        assert expected[mod_name].abs().max() > 1e-3  # the check is not vacuous

    model.set_adapter(name)
    got = _logits(model)
    ref = _base()
    for mod_name, dw in expected.items():
        ref.get_submodule(mod_name).weight.add_(dw)
    want = _logits(ref)
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(want, _logits(_base()), atol=1e-3)  # the mixture changes the output


@torch.no_grad()
def test_peft_linear_combination_has_cross_terms():
    model = _experts([(4, 8), (4, 16), (4, 4)])
    adapters, weights = ["g0", "g1", "g2"], [0.5, 0.3, 0.2]
    expected = _expected_deltas(model, adapters, weights)
    model.add_weighted_adapter(adapters, weights, adapter_name="lin", combination_type="linear")
    add_mixture(model, adapters, weights, "cat")
    worst_linear = max((_delta(m, "lin") - expected[n]).abs().max().item() for n, m in _lora_layers(model).items())
    worst_cat = max((_delta(m, "cat") - expected[n]).abs().max().item() for n, m in _lora_layers(model).items())
    assert worst_linear > 1e-2
    assert worst_cat < 1e-5


def test_add_mixture_rejects_bad_input():
    model = _experts(MIXED_SPECS[:2])
    with pytest.raises(TandemError, match="one weight per adapter"):
        add_mixture(model, ["g0", "g1"], [1.0], "m")
    with pytest.raises(TandemError, match="unknown adapter"):
        add_mixture(model, ["g0", "nope"], [0.5, 0.5], "m")
    with pytest.raises(TandemError, match="already taken"):
        add_mixture(model, ["g0", "g1"], [0.5, 0.5], "g1")


def test_mixture_cache_reuses_rounded_weights_and_evicts_lru():
    model = _experts(MIXED_SPECS)
    cache = MixtureCache(model, capacity=2)
    n0 = len(model.peft_config)
    a = cache.get(["g0", "g1"], [0.601, 0.399])
    assert len(model.peft_config) == n0 + 1
    assert cache.get(["g0", "g1"], [0.599, 0.4011]) == a  # rounds to the same 0.60 / 0.40
    assert len(model.peft_config) == n0 + 1  # no rebuild
    b = cache.get(["g0", "g1"], [0.3, 0.7])
    assert b != a and len(model.peft_config) == n0 + 2
    assert cache.get(["g0", "g1"], [0.6, 0.4]) == a  # a is now the most recently used
    model.set_adapter(b)
    c = cache.get(["g1", "g2"], [0.5, 0.5])  # evicts b, the least recently used, although it is active
    assert b not in model.peft_config
    assert a in model.peft_config and c in model.peft_config
    assert len(cache) == 2 and len(model.peft_config) == n0 + 2
    assert model.active_adapter == "g1"  # fell back to the first expert of the request that evicted it


@torch.no_grad()
def test_mixture_cache_uses_renormalised_rounded_weights():
    model = _experts(MIXED_SPECS)
    assert MixtureCache.rounded([0.333, 0.333, 0.333]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    name = MixtureCache(model).get(["g0", "g2"], [0.704, 0.2])  # rounds to 0.70 / 0.20, renormalised to 7/9, 2/9
    expected = _expected_deltas(model, ["g0", "g2"], [7 / 9, 2 / 9])
    for mod_name, layer in _lora_layers(model).items():
        assert torch.allclose(_delta(layer, name), expected[mod_name], atol=1e-5)
    with pytest.raises(TandemError, match="non-positive"):
        MixtureCache.rounded([0.001, 0.002])


@torch.no_grad()
def test_save_mixture_round_trips_through_from_pretrained(tmp_path):
    model = _experts(MIXED_SPECS)
    name = MixtureCache(model).get(["g0", "g1", "g2"], [0.2, 0.5, 0.3])
    model.set_adapter(name)
    want = _logits(model)
    folder = tmp_path / "mixture"
    save_mixture(model, name, folder)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["r"] == 14 and cfg["lora_alpha"] == 14
    loaded = peft.PeftModel.from_pretrained(_base(), folder).eval()
    assert torch.allclose(_logits(loaded), want, atol=1e-4)
    save_mixture(model, name, folder)  # overwriting an existing folder works
    assert (folder / "adapter_model.safetensors").exists()


# ------------------------------------------------------------------------------------------------------------ routing
def test_route_thresholds_k4():
    assert math.isclose(0.5 + 0.6 / 4, 0.65)
    r = route(np.array([0.66, 0.34 / 3, 0.34 / 3, 0.34 / 3]))
    assert r.kind == "group" and r.group == 0
    r = route(np.array([0.10, 0.20, 0.66, 0.04]))
    assert r.kind == "group" and r.group == 2
    w = np.array([0.64, 0.12, 0.12, 0.12])
    assert entropy(w) == pytest.approx(1.0489, abs=1e-3) and entropy(w) < 0.95 * math.log(4)
    assert route(w).kind == "mix" and route(w).group is None
    assert route(np.full(4, 0.25)).kind == "general"
    flat = np.array([0.3, 0.25, 0.25, 0.2])  # not uniform, but H = 1.376 >= 0.95 log 4 = 1.317
    assert route(flat).kind == "general"
    assert route(np.array([0.6, 0.4, 0.0, 0.0])).kind == "mix"  # below threshold, H = 0.673


def test_route_thresholds_k2_and_k1():
    assert route(np.array([0.81, 0.19])).kind == "group"
    assert route(np.array([0.19, 0.81])).group == 1
    h = entropy(np.array([0.79, 0.21]))
    assert h == pytest.approx(0.514, abs=1e-3) and h < 0.95 * math.log(2)
    assert route(np.array([0.79, 0.21])).kind == "mix"
    assert route(np.array([0.55, 0.45])).kind == "general"  # H = 0.688 >= 0.658
    r = route(np.array([1.0]))
    assert r.kind == "group" and r.group == 0


def test_gate_weights():
    centroids = np.eye(4, 6)  # (K=4, d=6)
    user = np.array([0.2, 0.1, 1.0, 0.3, 0.0, 0.0])
    w = gate_weights(user, centroids)
    assert w.shape == (4,) and w.sum() == pytest.approx(1.0)
    assert int(np.argmax(w)) == 2
    sharp, soft = gate_weights(user, centroids, 0.01), gate_weights(user, centroids, 1.0)
    assert sharp.max() > w.max() > soft.max()
    assert np.isfinite(gate_weights(user * 1e6, centroids, 1e-6)).all()  # stable for tiny temperatures
    assert np.allclose(gate_weights(np.zeros(6), centroids), 0.25)
    with pytest.raises(TandemError):
        gate_weights(user, centroids, 0.0)


# --------------------------------------------------------------------------------------------------------- clustering
def _blobs(n_per: int = 50, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = 10.0 * np.eye(3, d)
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])  # (150, d)
    return x, np.repeat(np.arange(3), n_per)


def test_choose_clusters_finds_three_blobs(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    x, truth = _blobs()
    c = choose_clusters(x)
    assert c.k == 3
    assert sorted(c.silhouette) == list(range(2, 11))
    assert max(c.silhouette, key=c.silhouette.get) == 3
    assert adjusted_rand_score(truth, c.labels) > 0.9
    assert c.centroids.shape == (3, 8)
    assert np.allclose(np.linalg.norm(c.centroids, axis=1), 1.0)

    atomic_write_json(tmp_path / "clusters.json", c.to_json())
    back = Clustering.from_json(json.loads((tmp_path / "clusters.json").read_text()))
    assert back.k == 3 and np.allclose(back.centroids, c.centroids) and (back.labels == c.labels).all()
    assert back.silhouette == pytest.approx(c.silhouette)


def test_choose_clusters_with_sampled_silhouette_and_capped_k():
    x, _ = _blobs()
    assert choose_clusters(x, sample_size=60, k_max=4).k == 3
    small = choose_clusters(x[[0, 1, 50, 51, 100]], k_max=10)
    assert sorted(small.silhouette) == [2, 3, 4]  # capped at U - 1


def test_choose_clusters_errors():
    x, _ = _blobs()
    with pytest.raises(TandemError, match="at least 3"):
        choose_clusters(x[:2])
    with pytest.raises(TandemError, match="k_min must be at least 2"):
        choose_clusters(x, k_min=1)
    with pytest.raises(TandemError, match="must not exceed"):
        choose_clusters(x, k_min=5, k_max=4)
