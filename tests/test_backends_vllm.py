"""The vLLM backend gives the same trie-constrained beam-search lists (TIGER, arXiv 2305.05065) as the transformers
backend: offline, with a LoRA adapter applied per request, and through a real OpenAI-compatible server; plus the base
class's handling of unknown ids and empty histories. Skipped when vLLM (the ``[vllm]`` extra) is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (the [vllm] extra)")

from llm_cloud.backends import UnknownItemsError  # noqa: E402
from llm_cloud.backends.transformers_backend import TransformersBackend  # noqa: E402
from llm_cloud.generative.checkpoint import load_artifact, write_extras  # noqa: E402
from llm_cloud.generative.model import TinyModelConfig, build_tiny_model  # noqa: E402
from llm_cloud.generative.prompts import PromptFormat  # noqa: E402
from llm_cloud.generative.tokens import SemanticIdCodec, build_tokenizer  # noqa: E402
from tests.live import free_port, serve_process  # noqa: E402

CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1"}
for _key, _value in CPU_ENV.items():
    os.environ.setdefault(_key, _value)

SIZE = TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=128)  # head 32
N_ITEMS, MAX_ITEMS = 60, 8
HISTORIES = [np.array([3]), np.array([5, 17, 42]), np.array([60, 1, 2, 9, 33, 12, 7, 50, 21, 4]), np.array([28, 28])]


def codes_table(n_items: int) -> np.ndarray:
    """(n_items+1, 3): level sizes 6 and 4, then a trailing level that makes each row unique; row 0 = -1."""
    rng = np.random.default_rng(0)
    table, seen = np.full((n_items + 1, 3), -1, dtype=np.int64), {}
    for item in range(1, n_items + 1):
        head = (int(rng.integers(0, 6)), int(rng.integers(0, 4)))
        table[item] = (*head, seen.get(head, 0))
        seen[head] = seen.get(head, 0) + 1
    return table


def write_checkpoint(folder: Path, lora: bool) -> Path:
    """A random-init tiny checkpoint (spread-out logits, so beams rarely tie), optionally with a PEFT LoRA adapter."""
    import torch

    codes = codes_table(N_ITEMS)
    tok = build_tokenizer(codes)
    fmt = PromptFormat.codes_only(SemanticIdCodec.from_tokenizer(codes, tok))
    model = build_tiny_model(SIZE, tok, fmt.max_length(MAX_ITEMS), seed=1)
    torch.nn.init.normal_(model.get_input_embeddings().weight, std=1.0)  # tied head: logits spread over several nats
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    counts = np.r_[0, np.arange(1, N_ITEMS + 1) * 7 % 13 + 1].astype(np.int64)  # (N+1,) training interactions
    write_extras(folder, codes, {"max_items": MAX_ITEMS, "profile": "tiny"}, fmt, counts)
    if lora:
        import peft
        cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                              init_lora_weights=False, task_type="CAUSAL_LM")
        torch.manual_seed(3)
        peft.get_peft_model(model, cfg).save_pretrained(folder / "adapter")
    return folder


def assert_same(got, want, atol: float = 1e-3) -> None:
    """Same items in the same order and the same scores, except that items whose scores tie (within 1e-4) may swap."""
    assert len(got.items) == len(want.items) and not got.cold_start
    np.testing.assert_allclose(got.scores, want.scores, atol=atol)
    for k, (a, b) in enumerate(zip(got.items, want.items)):
        if a != b:
            near = np.abs(want.scores - got.scores[k]) < 1e-4
            cut = a not in want.items and abs(got.scores[k] - want.scores[-1]) < 1e-4  # a tie at the list's end
            assert a in want.items[near] or cut, (k, got.items, want.items)


def check_lists(backend, reference, ns=(1, 5, 100)) -> None:
    for n in ns:
        for got, want in zip(backend.beam_candidates(HISTORIES, n), reference.beam_candidates(HISTORIES, n)):
            assert_same(got, want)


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("vllm") / "base", lora=False)


@pytest.fixture(scope="module")
def lora_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("vllm") / "lora", lora=True)


@pytest.fixture(scope="module")
def offline(base_ckpt: Path):
    from llm_cloud.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(load_artifact(base_ckpt))
    yield backend
    backend.close()


def test_offline_lists_equal_transformers(offline, base_ckpt: Path, monkeypatch) -> None:
    from llm_cloud.backends import vllm_backend

    reference = TransformersBackend(load_artifact(base_ckpt))
    check_lists(offline, reference)
    full = offline.beam_candidates(HISTORIES[:1], 100)[0]
    assert len(full.items) == N_ITEMS and sorted(full.items.tolist()) == list(range(1, N_ITEMS + 1))
    monkeypatch.setattr(vllm_backend, "MAX_IDS", 2)  # trie nodes wider than a request's id limit are split
    check_lists(offline, reference, ns=(5,))
    prompt = "<bos> <a_1> <b_2> <c_0>"
    assert len(offline.artifact.tokenizer(prompt, add_special_tokens=False)["input_ids"]) == 4
    texts = offline.generate([prompt, "<bos>"], 7)
    assert texts == reference.generate([prompt, "<bos>"], 7) and texts[0]


def test_unknown_ids_and_empty_history(offline) -> None:
    with pytest.raises(UnknownItemsError, match="61"):
        offline.beam_candidates([np.array([1, 61, 0])])
    lists = offline.beam_candidates([np.array([], dtype=np.int64), HISTORIES[1]], n=5)
    cold = offline.popular(5)
    assert lists[0].cold_start and lists[0].items.tolist() == cold.items.tolist()
    assert not lists[1].cold_start and len(lists[1].items) == 5


def test_lora_per_request_equals_peft(lora_ckpt: Path, base_ckpt: Path) -> None:
    from llm_cloud.backends.vllm_backend import VLLMBackend

    art = load_artifact(lora_ckpt)
    assert art.adapter_dir is not None
    backend = VLLMBackend(art)
    try:
        check_lists(backend, TransformersBackend(art), ns=(5, 100))
        base = TransformersBackend(load_artifact(base_ckpt)).beam_candidates(HISTORIES, 5)
        assert any(not np.allclose(a.scores, b.scores, atol=1e-2)
                   for a, b in zip(backend.beam_candidates(HISTORIES, 5), base))  # the adapter changes the lists
    finally:
        backend.close()


@pytest.fixture(scope="module")
def server(lora_ckpt: Path):
    """A real OpenAI-compatible vLLM server on 127.0.0.1 (free port) serving the base and its LoRA module."""
    from llm_cloud.backends.vllm_backend import server_command

    port = free_port()
    with serve_process(server_command(load_artifact(lora_ckpt), port), port, lora_ckpt.parent / "server.log",
                       CPU_ENV) as url:
        yield url


def test_server_lists_equal_transformers(server: str, lora_ckpt: Path, base_ckpt: Path) -> None:
    from llm_cloud.backends.vllm_backend import SERVED_NAME, VLLMBackend

    art = load_artifact(lora_ckpt)
    client = VLLMBackend(art, server_url=server)  # the LoRA module, picked by name
    try:
        check_lists(client, TransformersBackend(art), ns=(1, 5, 100))
        prompt = "<bos> <a_1> <b_2> <c_0>"
        assert client.generate([prompt], 6) == TransformersBackend(art).generate([prompt], 6)
    finally:
        client.close()
    base = VLLMBackend(load_artifact(base_ckpt), server_url=server, model=SERVED_NAME)  # same server, base weights
    try:
        check_lists(base, TransformersBackend(load_artifact(base_ckpt)), ns=(5,))
    finally:
        base.close()
