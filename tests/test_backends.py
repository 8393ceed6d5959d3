"""LLM backends and profiles: the transformers backend's checks (unknown ids named, empty history = popularity cold
start), the titled prompt format, and the smollm profile's save layout (base with trained code-token rows + a plain
LoRA adapter) reproducing the trained model exactly. vLLM parity lives in test_backends_vllm.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_cloud.backends import UnknownItemsError, load_backend
from llm_cloud.generative.checkpoint import load_artifact, write_extras
from llm_cloud.generative.prompts import IGNORE, PromptFormat
from llm_cloud.generative.tokens import SemanticIdCodec, build_tokenizer
from tandem.data.dataset import Catalogue
from tandem.errors import TandemError
from tests.test_generative import TINY, make, random_codes


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_ckpt")
    codes = random_codes(np.random.default_rng(3), 15)
    tok, fmt, model = make(codes, TINY, max_items=5)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    counts = np.arange(16)[::-1].copy()
    counts[0] = 0  # item 1 is the most popular, then 2, ...
    write_extras(folder, codes, {"profile": "tiny", "max_items": 5}, fmt, counts)
    return folder


def test_unknown_ids_are_named_and_empty_history_is_cold_start(tiny_checkpoint: Path) -> None:
    backend = load_backend("transformers", tiny_checkpoint)
    with pytest.raises(UnknownItemsError, match=r"unknown item ids in history: 0, 16, 99; valid ids are 1\.\.15"):
        backend.beam_candidates([np.array([1, 2]), np.array([99, 16]), np.array([0])], n=5)
    with pytest.raises(TandemError, match="must be integers"):
        backend.beam_candidates([np.array([1.5])], n=5)
    with pytest.raises(TandemError, match=r"n \(candidates per user\) must be in 1\.\.100"):
        backend.beam_candidates([np.array([1])], n=101)
    cold, warm = backend.beam_candidates([np.array([], dtype=np.int64), np.array([3, 4])], n=5)
    assert cold.cold_start and cold.items.tolist() == [1, 2, 3, 4, 5]
    assert np.all(np.diff(cold.scores) < 0)
    assert not warm.cold_start and len(warm.items) == 5 and len(set(warm.items.tolist())) == 5
    assert np.all(warm.scores < 0)  # log-probabilities


def test_vllm_backend_missing_gives_the_install_command(tiny_checkpoint: Path) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(TandemError, match=r'pip install -e "\.\[vllm\]"'):
            load_backend("vllm", tiny_checkpoint)
    else:
        pytest.skip("vLLM is installed, so the missing-package message cannot be shown")
    with pytest.raises(TandemError, match="unknown backend 'onnx'"):
        load_backend("onnx", tiny_checkpoint)


def test_titled_format_labels_only_code_tokens() -> None:
    codes = np.array([[-1, -1], [0, 0], [0, 1], [1, 0]])
    tok = build_tokenizer(codes)
    codec = SemanticIdCodec.from_tokenizer(codes, tok)
    fmt = PromptFormat(codec=codec, prefix=[codec.bos_id], suffix=[[], [90, 91], [92], [93, 94, 95]])
    ids, labels = fmt.example(np.array([1, 3, 2]), first_target=1)
    c = codec.item_tokens
    assert ids == [codec.bos_id, *c[1], 90, 91, *c[3], 93, 94, 95, *c[2], 92]
    assert labels == [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, *c[3], IGNORE, IGNORE, IGNORE, *c[2], IGNORE]
    assert fmt.history_ids(np.array([2])) == [codec.bos_id, *c[2], 92]
    assert fmt.max_item_tokens == 2 + 3 and fmt.max_length(4) == 1 + 5 * 5 + 1


def test_smollm_profile_saves_a_servable_layout(tmp_path: Path) -> None:
    """Real SmolLM2-135M (fetched once into the cache): after random edits to LoRA and the code-token rows, the saved
    root + adapter/ gives the trained model's logits, and the adapter holds LoRA weights only."""
    from llm_cloud.generative.profiles import SmolLMProfile
    from llm_cloud.train.sft_config import LoRAOptions, SFTRunConfig

    n_items = 12
    codes = random_codes(np.random.default_rng(0), n_items)
    titles = [""] + [f"Movie number {i} (199{i % 10})" for i in range(1, n_items + 1)]
    catalogue = Catalogue(raw_ids=[""] + [str(i) for i in range(1, n_items + 1)], fields={"title": titles},
                          title_field="title")
    cfg = SFTRunConfig(profile="smollm", lora=LoRAOptions(r=4, target_modules=["q_proj", "v_proj"]), max_items=3)
    profile = SmolLMProfile()
    built = profile.build(cfg, codes, catalogue)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:  # lora_A/B and the code-token rows
                p.add_(torch.randn_like(p) * 0.05)
    ids = torch.tensor([built.fmt.history_ids(np.array([3, 1, 7])) + built.fmt.codec.item_tokens[5].tolist()])
    built.model.eval()
    with torch.no_grad():
        expected = built.model(input_ids=ids).logits  # (1, t, V)
    assert "Movie number 3" in built.tokenizer.decode(ids[0])
    profile.save(built.model, built.tokenizer, tmp_path)
    write_extras(tmp_path, codes, {"profile": "smollm", "max_items": 3}, built.fmt, np.ones(n_items + 1, np.int64))
    adapter = tmp_path / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["trainable_token_indices"] is None and config["r"] == 4
    from safetensors.torch import load_file

    keys = list(load_file(adapter / "adapter_model.safetensors"))
    assert keys and all("lora_" in k for k in keys), keys[:5]
    artifact = load_artifact(tmp_path)
    with torch.no_grad():
        got = artifact.load_model()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
    cands = load_backend("transformers", tmp_path).beam_candidates([np.array([3, 1, 7])], n=4)[0]
    assert len(cands.items) == 4 and set(cands.items.tolist()) <= set(range(1, n_items + 1))
