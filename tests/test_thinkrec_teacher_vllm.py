"""ThinkRec trace synthesis (arXiv 2505.15091) against a real ``vllm serve`` (the OpenAI-compatible api_server) of a
tiny random Qwen2 on 127.0.0.1, through :class:`llm_common.teacher.OpenAITeacher`. Skipped when vLLM (the ``[vllm]``
extra) is not installed; ``tests/test_thinkrec_traces.py`` covers the same pipeline against a stand-in server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (the [vllm] extra); the stand-in server test still runs")

from llm_cloud.thinkrec.prompts import rec_prompt  # noqa: E402
from llm_cloud.thinkrec.traces import read_traces, synthesize_traces  # noqa: E402
from llm_common.teacher import OpenAITeacher  # noqa: E402
from tests.live import free_port, serve_process  # noqa: E402

CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "1"}
SERVED = "tiny-teacher"


def tiny_model(folder: Path) -> Path:
    """A random 1-layer Qwen2 (head size 32, as vLLM's CPU attention needs) in ``folder``, and its word-level tokenizer
    in ``folder/tokenizer`` too: with the model's config beside it, transformers 5 would load the files as a
    ``Qwen2Tokenizer`` that encodes every prompt to nothing, so the server is pointed at the tokenizer-only folder."""
    import torch
    from tokenizers.decoders import WordPiece
    from transformers import AutoModelForCausalLM, Qwen2Config

    from tests.test_merging_calibration import _tokenizer

    torch.manual_seed(0)
    tok = _tokenizer()
    tok.backend_tokenizer.decoder = WordPiece(cleanup=False)  # decoded words separated by spaces
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    tok.save_pretrained(folder / "tokenizer")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("thinkrec_vllm")
    model, port, log = tiny_model(root / "model"), free_port(), root / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--tokenizer",
           str(model / "tokenizer"), "--served-model-name",
           SERVED, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--block-size", "32", "--max-model-len", "512", "--seed", "0"]
    with serve_process(cmd, port, log, CPU_ENV) as url:
        yield url


def test_traces_through_a_real_vllm_server(server: str, tmp_path: Path) -> None:
    teacher = OpenAITeacher(server, SERVED, timeout=60)
    texts = teacher.complete(["A user watched w1 w2 w3 . Target movie : w4"], n=1, temperature=0.0, max_tokens=8)
    assert len(texts) == 1 and len(texts[0]) == 1 and isinstance(texts[0][0], str)  # the HTTP path works

    history = ["Star Wars (keywords: space, adventure)", "Toy Story (keywords: family, toys)"]
    rows = [{"id": f"r{k}", "prompt": rec_prompt(history, t), "label": k % 2}
            for k, t in enumerate(["Alien (keywords: space)", "Heat (keywords: crime)", "Up (keywords: family)"])]
    out = tmp_path / "traces.jsonl"
    report = synthesize_traces(rows, teacher, out, max_tokens=24, retries=1)
    assert report["requested"] == 3 and report["synthesized"] + report["failed"] == 3
    assert report["teacher"] == teacher.name
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["r0", "r1", "r2"]
    for r in recs:  # a random model may babble a trace or nothing usable: both end in a well-formed record
        assert r["teacher"] == teacher.name
        if r["ok"]:
            assert isinstance(r["trace"], str) and len(r["trace"]) >= 20
        else:
            assert isinstance(r["error"], str) and r["error"] and r["attempts"] == 2
    assert set(read_traces(out)) == {r["id"] for r in recs if r["ok"]}
