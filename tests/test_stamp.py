"""STAMP while training (llm_cloud.generative.stamp) and the optional SFT settings (llm_cloud.train.sft_extras)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_cloud.generative.rastp import token_pruning
from llm_cloud.generative.stamp import (
    HEADS_ATTR,
    MultiStepHeads,
    attach_heads,
    detach_heads,
    final_hidden_hook,
    multi_step_loss,
    sap_chooser,
    sap_scores,
)
from llm_cloud.train.sft_config import SFTRunConfig
from llm_cloud.train.sft_extras import PruningGate, trainer_class
from tests.test_generative import make, random_codes, run
from tests.test_rastp import SIZE, batch, small_sft_config


def test_sap_scores_by_hand() -> None:
    # width 2, prefix 1: position 0 is the prefix, then levels 0,1,0,1
    received = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])  # (1,5)
    hidden = torch.zeros(1, 5, 2)
    hidden[0, :, 0] = torch.tensor([1.0, 1.0, 2.0, 3.0, 2.0])  # norms
    pad = torch.ones(1, 5, dtype=torch.bool)
    got = sap_scores(received, hidden, pad, width=2, prefix=1)
    # viewers: 5,4,3,2,1 -> centrality 1 everywhere; level means: prefix 1, level0 (1+3)/2=2, level1 (2+2)/2=2
    assert torch.allclose(got, torch.tensor([[1.0, 0.5, 1.0, 1.5, 1.0]]))
    pad = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    got = sap_scores(received, hidden, pad, width=2, prefix=1)
    # viewers 3,2,1; level0 has one real token (norm 1), level1 one (norm 2)
    assert torch.allclose(got[0, :3], torch.tensor([5 / 3, 4 / 2 * 1.0, 3 / 1 * 1.0]))
    assert torch.isinf(got[0, 3:]).all() and (got[0, 3:] < 0).all()


def test_sap_keeps_a_share_of_the_longest_real_row() -> None:
    choose = sap_chooser(0.5, width=2, prefix=1)
    received, hidden = torch.rand(2, 10), torch.rand(2, 10, 4)
    pad = torch.zeros(2, 10, dtype=torch.bool)
    pad[0, :6], pad[1, :4] = True, True  # longest real row: 6 of 10 padded positions
    idx = choose(received, hidden, pad)
    assert idx.shape == (2, 3)  # ceil(0.5 * 6), not ceil(0.5 * 10)
    assert (idx[0] < 6).all() and (idx[1] < 4).all()  # real tokens first
    assert torch.equal(idx, idx.sort(-1).values)  # causal order


def test_multi_step_loss_predicts_the_item_after_next() -> None:
    torch.manual_seed(0)
    b, t, d, v, width = 2, 9, 4, 7, 2
    hidden, head = torch.randn(b, t, d), torch.nn.Linear(d, v, bias=False)
    labels = torch.randint(0, v, (b, t))
    labels[0, 5] = -100
    heads = MultiStepHeads(d, steps=2)  # zero-initialised: the auxiliary heads start as the LM head itself
    got = multi_step_loss(hidden, labels, head, heads, width)
    want = [F.cross_entropy(head(hidden[:, :-(1 + s * width)]).flatten(0, 1), labels[:, 1 + s * width:].flatten(),
                            ignore_index=-100) for s in (1, 2)]
    assert torch.allclose(got, torch.stack(want).mean(), atol=1e-6)
    short = multi_step_loss(hidden[:, :4], labels[:, :4], head, heads, width)  # step 2 needs t > 5: left out
    assert torch.allclose(short, F.cross_entropy(head(hidden[:, :1]).flatten(0, 1), labels[:, 3:4].flatten()))
    none = multi_step_loss(hidden, torch.full_like(labels, -100), head, heads, width)
    assert none.item() == 0.0


def test_final_hidden_hook_sees_the_pruned_forward_and_heads_come_off() -> None:
    codes = random_codes(np.random.default_rng(6), 30)
    _, fmt, model = make(codes, SIZE)
    inputs = batch(codes, fmt)
    heads = attach_heads(model, steps=1)
    assert getattr(model, HEADS_ATTR) is heads
    assert any(n.startswith(HEADS_ATTR) for n, _ in model.named_parameters())
    store: dict = {}
    model.train()
    handle = final_hidden_hook(model, store)
    with token_pruning(model, 1, sap_chooser(0.5, fmt.codec.width, len(fmt.prefix))):
        out = model(**inputs)
    handle.remove()
    assert store["hidden"].shape == (*inputs["input_ids"].shape, SIZE.hidden_size)
    aux = multi_step_loss(store["hidden"], inputs["labels"], model.get_output_embeddings(), heads, fmt.codec.width)
    (out.loss + aux).backward()
    assert all(p.grad is not None for p in heads.parameters())
    detach_heads(model)
    assert not any(n.startswith(HEADS_ATTR) for n, _ in model.named_parameters())


def test_pruning_gate_opens_after_the_warmup() -> None:
    gate = PruningGate(0.25)
    callback = gate.callback()
    seen = []
    for step in range(8):
        callback.on_step_begin(None, SimpleNamespace(global_step=step, max_steps=8), None)
        seen.append(gate())
    assert seen == [False, False, True, True, True, True, True, True]
    assert PruningGate(0.0)()


def test_trainer_class_follows_the_settings() -> None:
    class Base:  # stands in for SFTTrainer
        pass

    fmt = SimpleNamespace(codec=SimpleNamespace(width=4), prefix=[1])
    model = torch.nn.Module()
    model.config = SimpleNamespace(hidden_size=8)
    assert trainer_class(SFTRunConfig(), Base, True, model, fmt) is Base
    smooth = trainer_class(SFTRunConfig(label_smoothing=0.1), Base, True, model, fmt)
    assert smooth.__name__ == "PlainLossSFTTrainer" and issubclass(smooth, Base)
    assert trainer_class(SFTRunConfig(fused_loss=False), Base, True, model, fmt).__name__ == "PlainLossSFTTrainer"
    assert trainer_class(SFTRunConfig(), Base, False, model, fmt).__name__ == "PlainLossSFTTrainer"  # the profile's say
    stamp = trainer_class(SFTRunConfig(stamp={"keep": 1.0, "steps": 2}), Base, True, model, fmt)
    assert stamp.__name__ == "STAMPSFTTrainer" and len(getattr(model, HEADS_ATTR).maps) == 2


@pytest.mark.parametrize("extra, fragment", [
    ({"rastp": {}, "stamp": {}}, "keep one of `rastp:` and `stamp:`"),
    ({"stamp": {"layer": 2}}, "stamp.layer 2 must be below model.num_layers 2"),
])
def test_stamp_config_refusals(extra: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("`", ".")):
        SFTRunConfig(**extra)
    SFTRunConfig(stamp={"layer": 5, "keep": 1.0})  # no pruning: the layer does not matter


def test_sft_script_trains_with_stamp(tmp_path: Path) -> None:
    cfg = small_sft_config(tmp_path, "stamp: {layer: 1, keep: 0.5, steps: 1, weight: 0.5, warmup: 0.3}\n"
                           "lr_scheduler: cosine\ngroup_by_length: true\nlabel_smoothing: 0.1\n", epochs=2)
    out = tmp_path / "ckpt"
    proc = run("llm_cloud.train.sft", "--config", str(cfg), "--out", str(out), home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "tandem_llm.json").read_text())
    assert meta["run_config"]["stamp"]["steps"] == 1 and math.isfinite(meta["train_loss"])
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if HEADS_ATTR in k]  # the served model has no auxiliary heads
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out)
    assert type(saved).__name__ == "Qwen2ForCausalLM" and not hasattr(saved, HEADS_ATTR)
