"""A merged LoRA adapter written by `tandem merge` is served by vLLM per request and gives what PEFT gives on the same
base. Skipped when vLLM (the ``[vllm]`` extra) is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (the [vllm] extra)")

for _key, _value in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}.items():
    os.environ.setdefault(_key, _value)

PROMPTS = [[1, 5, 9, 17], [3, 3, 40, 2, 77, 8], [100]]


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # B starts at zero in PEFT: make the delta real
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(out)
    return out


def test_merged_adapter_serves_on_vllm_like_peft(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, Qwen2Config
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from pipelines.cli.main import main

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, bos_token_id=None,
                      eos_token_id=None)  # head size 32; no EOS, so both engines generate all 6 tokens
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "base")
    a, b = make_adapter(tmp_path / "base", tmp_path / "a", 1), make_adapter(tmp_path / "base", tmp_path / "b", 2)
    out = tmp_path / "merged"
    assert main(["merge", "--method", "ties", "--adapter", f"{a}:0.6", "--adapter", f"{b}:0.4", "--param",
                 "density=0.5", "--out", str(out), "--quiet"]) == 0

    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), out).eval()
    expected = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = peft.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=0)
            expected.append(ids[0, len(prompt):].tolist())
            first = torch.log_softmax(peft(torch.tensor([prompt])).logits[0, -1], dim=-1)  # (vocab,)
            expected[-1] = (expected[-1], float(first[expected[-1][0]]))

    llm = LLM(model=str(tmp_path / "base"), skip_tokenizer_init=True, enable_lora=True, max_lora_rank=8, max_loras=1,
              dtype="float32", enforce_eager=True, max_model_len=128, block_size=32, seed=0)
    params = SamplingParams(max_tokens=6, temperature=0.0, detokenize=False, logprobs=1, ignore_eos=True)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in PROMPTS], params, use_tqdm=False,
                        lora_request=LoRARequest("merged", 1, str(out)))
    for (tokens, logprob), o in zip(expected, outs):
        got = list(o.outputs[0].token_ids)
        assert got == tokens
        assert abs(o.outputs[0].logprobs[0][got[0]].logprob - logprob) < 1e-3
