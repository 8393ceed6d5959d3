"""RASTP token pruning while training (llm_cloud.generative.rastp)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_cloud.generative.model import TinyModelConfig
from llm_cloud.generative.rastp import attention_received, importance, rastp_pruning, select_tokens
from llm_cloud.train.sft_config import RASTPOptions
from tests.conftest import cyclic_sequences, write_atomic
from tests.test_generative import make, random_codes, run

SIZE = TinyModelConfig(hidden_size=64, num_layers=3, num_heads=2, num_kv_heads=1, intermediate_size=64)


def test_importance_and_selection_by_hand() -> None:
    received = torch.tensor([[4.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 9.0]])  # (2,4)
    hidden = torch.zeros(2, 4, 2)
    hidden[..., 0] = torch.tensor([[1.0, 5.0, 1.0, 1.0], [2.0, 1.0, 3.0, 1.0]])  # norms
    pad = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    scores = importance(received, hidden, pad)
    assert torch.equal(scores[0], torch.tensor([4.0, 5.0, 2.0, 3.0]))
    assert scores[1, :3].tolist() == [2.0, 1.0, 3.0] and scores[1, 3] == float("-inf")  # padding scored lowest
    assert select_tokens(scores, 2).tolist() == [[0, 1], [0, 2]]  # top 2, in causal order
    assert select_tokens(scores, 4).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_attention_received_sums_probabilities_of_real_queries() -> None:
    _, _, model = make(random_codes(np.random.default_rng(0), 12), SIZE)
    attn, norm = model.model.layers[0].self_attn, model.model.layers[0].input_layernorm
    x = norm(torch.randn(2, 6, 64))
    pos = torch.arange(6)[None].expand(2, 6)
    cos, sin = model.model.rotary_emb(x, pos)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    got = attention_received(attn, x, cos, sin, pad)
    assert got.shape == (2, 6)
    # each real query spreads one unit of probability per head over the keys
    assert torch.allclose(got.sum(-1), torch.tensor([6.0 * 2, 4.0 * 2]), atol=1e-5)
    assert got[1, 4:].abs().max() == 0  # padding receives nothing
    assert got[0, 0] > got[0, 5]  # the first key is seen by every query


def batch(codes: np.ndarray, fmt, rows: int = 3) -> dict[str, torch.Tensor]:
    """A right-padded batch of the tiny profile's rows (as TRL's collator builds it)."""
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, len(codes), size=n) for n in (8, 5, 7)[:rows]]
    ids = [fmt.example(s, 0)[0] for s in seqs]
    t = max(map(len, ids))
    input_ids = torch.tensor([r + [0] * (t - len(r)) for r in ids])
    mask = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in ids])
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def test_keep_all_matches_the_unpatched_model() -> None:
    codes = random_codes(np.random.default_rng(2), 30)
    _, fmt, model = make(codes, SIZE)
    inputs = batch(codes, fmt)
    model.train()
    ref = model(**inputs)
    with rastp_pruning(model, RASTPOptions(layer=1, keep=1.0)):
        got = model(**inputs)
    real = inputs["attention_mask"].bool()
    assert torch.allclose(got.logits[real], ref.logits[real], atol=1e-5)
    assert abs(got.loss.item() - ref.loss.item()) < 1e-5


def test_half_the_tokens_reach_the_pruned_layers_and_all_parameters_learn() -> None:
    codes = random_codes(np.random.default_rng(3), 30)
    _, fmt, model = make(codes, SIZE)
    inputs = batch(codes, fmt)
    t = inputs["input_ids"].shape[1]
    seen: dict[int, int] = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.shape[1]))
             for i, layer in enumerate(model.model.layers)]
    model.train()
    with rastp_pruning(model, RASTPOptions(layer=1, keep=0.5)):
        out = model(**inputs)
        assert seen == {0: t, 1: math.ceil(0.5 * t), 2: math.ceil(0.5 * t)}
        assert out.logits.shape[1] == t and torch.isfinite(out.loss)
        out.loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        model.eval()  # inference runs the full model even inside the block
        model(**{k: v for k, v in inputs.items() if k != "labels"})
        assert seen == {0: t, 1: t, 2: t}
    for h in hooks:
        h.remove()


def test_forward_is_restored_also_after_an_exception() -> None:
    _, _, model = make(random_codes(np.random.default_rng(4), 10), SIZE)
    assert "forward" not in model.model.__dict__
    with rastp_pruning(model, RASTPOptions(layer=2, keep=0.3)):
        assert "forward" in model.model.__dict__
    assert "forward" not in model.model.__dict__
    with pytest.raises(RuntimeError, match="boom"), rastp_pruning(model, RASTPOptions(layer=1, keep=0.3)):
        raise RuntimeError("boom")
    assert "forward" not in model.model.__dict__


def test_refuses_bad_layer_and_other_architectures() -> None:
    _, _, model = make(random_codes(np.random.default_rng(5), 10), SIZE)
    with pytest.raises(ValueError, match="num_layers - 1 = 2"), rastp_pruning(model, RASTPOptions(layer=3)):
        pass
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=1, vocab_size=10, n_positions=8))
    with pytest.raises(ValueError, match="'gpt2'.*remove `rastp:`"), rastp_pruning(gpt2, RASTPOptions()):
        pass


def small_sft_config(tmp_path: Path, extra: str, epochs: int = 1) -> Path:
    """A tiny-profile SFT config on cyclic data, with the YAML lines ``extra`` added."""
    data = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=20, n_items=20, length=12))
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"dataset: {data}\nepochs: {epochs}\nbatch_size: 8\nmax_items: 10\nwindow_stride: 5\n"
                   f"model: {{hidden_size: 64, num_heads: 2, num_kv_heads: 1, num_layers: 2, intermediate_size: 64}}\n"
                   f"{extra}output_dir: {tmp_path / 'unused'}\n")
    return cfg


def test_sft_script_trains_with_rastp(tmp_path: Path) -> None:
    cfg = small_sft_config(tmp_path, "rastp: {layer: 1, keep: 0.5}\n")
    out = tmp_path / "ckpt"
    proc = run("llm_cloud.train.sft", "--config", str(cfg), "--out", str(out), home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "tandem_llm.json").read_text())
    assert meta["run_config"]["rastp"] == {"layer": 1, "keep": 0.5, "warmup": 0.0} and math.isfinite(meta["train_loss"])
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out)  # a plain HF model
    assert "forward" not in saved.model.__dict__ and type(saved).__name__ == "Qwen2ForCausalLM"
