"""The ``tiny`` profile: a small Qwen2 causal LM trained from scratch on semantic-ID sequences.

The head size is kept at 32 or more because vLLM's CPU attention only supports 32, 64, 80, 96, 112, 128 and up.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128)


class TinyModelConfig(BaseModel):
    """Size of the ``tiny`` profile (defaults: hidden 128, 4 query heads and 2 KV heads of 32, 2 layers)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, ge=32, description="model width")
    num_layers: int = Field(2, ge=1, description="transformer blocks")
    num_heads: int = Field(4, ge=1, description="query heads; hidden_size / num_heads is the head size")
    num_kv_heads: int = Field(2, ge=1, description="key/value heads (grouped-query attention)")
    intermediate_size: int = Field(512, ge=1, description="MLP width")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="attention dropout")

    @model_validator(mode="after")
    def _check_heads(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        head = self.hidden_size // self.num_heads
        if head not in VLLM_CPU_HEAD_SIZES and head < 128:
            raise ValueError(f"head size hidden_size/num_heads = {head}; vLLM's CPU attention needs one of "
                             f"{VLLM_CPU_HEAD_SIZES} or more; change hidden_size or num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")
        return self


def build_tiny_model(size: TinyModelConfig, tokenizer, n_positions: int, seed: int = 2020):
    """A randomly initialised Qwen2ForCausalLM whose vocabulary is ``tokenizer``'s."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=size.hidden_size, num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads, num_key_value_heads=size.num_kv_heads,
        intermediate_size=size.intermediate_size, max_position_embeddings=n_positions,
        attention_dropout=size.dropout, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, use_cache=True,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg)
