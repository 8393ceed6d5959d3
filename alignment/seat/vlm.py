"""Cas-SEAT self-evaluation SFT for vision-language models (arXiv 2501.05662) through TRL's vision-language SFT path.

Rows are the conversational prompt–completion rows of :mod:`alignment.seat.sft` plus an ``images`` column: one JSONL
line per example, ``{"images": ["a.png"], "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text",
"text": "..."}]}], "completion": [{"role": "assistant", "content": "<answer> [self-evaluation-start: ...] ..."}]}``.
Image paths are relative to the JSONL's folder (or absolute). TRL 1.16's ``SFTTrainer`` sees the ``images`` column,
skips its text-only dataset preparation and collates with ``DataCollatorForVisionLanguageModeling``, which fills the
``{"type": "image"}`` placeholders with the PIL images, renders prompt and completion with the processor's chat
template and masks the loss to the completion. Its ``max_length`` truncates after the prompt's image tokens, so it
must leave room for them (``None``: no truncation).

The processor is loaded with ``AutoProcessor.from_pretrained(model_dir)`` unless one is passed; :func:`make_tiny_vlm`
builds a tiny LLaVA (CLIP vision tower, Llama text model, word-level tokenizer) from local configs for tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_common.sft_run import sft_args, train_and_save
from tandem.errors import TandemError


def _parts(messages: Any, where: str, name: str) -> list[dict[str, Any]]:
    """Messages with every string content turned into ``[{"type": "text", ...}]`` (one Arrow type per column)."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m
                                                                 for m in messages):
        raise TandemError(f"{where}: '{name}' must be a non-empty list of {{role, content}} messages; fix that line")
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not all(isinstance(p, dict) and p.get("type") in ("image", "text")
                                                    for p in content):
            raise TandemError(f"{where}: each '{name}' content must be a string or a list of {{'type': 'image'}} / "
                              f"{{'type': 'text', 'text': ...}} parts; fix that line")
        out.append({"role": m["role"], "content": [{"type": p["type"], "text": p.get("text")} if p["type"] == "text"
                                                   else {"type": "image"} for p in content]})
    return out


def read_vlm_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read image+text rows ``{"images", "prompt", "completion"}``; image paths come back absolute.

    Every problem (unreadable JSON, missing keys, a missing image, placeholders that do not match the images) is a
    one-line :class:`TandemError` naming the file, the line and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise TandemError(f"{path} does not exist; write the image+text JSONL first")
    rows = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TandemError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(row, dict):
            raise TandemError(f"{where}: expected a JSON object with images, prompt and completion; fix that line")
        images = row.get("images")
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise TandemError(f"{where}: 'images' must be a list of image file paths; fix that line")
        resolved = []
        for image in images:
            file = Path(image) if Path(image).is_absolute() else path.parent / image
            if not file.is_file():
                raise TandemError(f"{where}: image {image!r} not found at {file}; put the file there or fix the path "
                                  f"(relative paths are read from {path.parent})")
            resolved.append(str(file.resolve()))
        prompt, completion = _parts(row.get("prompt"), where, "prompt"), _parts(row.get("completion"), where,
                                                                                 "completion")
        slots = sum(p["type"] == "image" for m in prompt for p in m["content"])
        if slots != len(resolved):
            raise TandemError(f"{where}: the prompt has {slots} {{'type': 'image'}} parts but 'images' lists "
                              f"{len(resolved)}; make them match")
        rows.append({"images": resolved, "prompt": prompt, "completion": completion})
    if not rows:
        raise TandemError(f"{path} has no rows; write at least one image+text example")
    return rows


def _open_images(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from PIL import Image

    out = []
    for row in rows:
        images = []
        for file in row["images"]:
            try:
                with Image.open(file) as im:
                    images.append(im.convert("RGB"))
            except OSError as e:
                raise TandemError(f"cannot read image {file} ({e}); replace it with a PNG or JPEG file") from None
        out.append({**row, "images": images})
    return out


def run_vlm_sft(model_dir: str | Path, rows: list[dict[str, Any]], out: str | Path, epochs: float, batch_size: int,
                lr: float, max_length: int | None, seed: int, lora_r: int = 0, progress: bool = False,
                processor: Any = None, save_steps: int = 50) -> dict[str, Any]:
    """Train a vision-language model on Cas-SEAT rows (from :func:`read_vlm_jsonl`) with TRL's ``SFTTrainer``.

    Resumes from the newest ``checkpoint-*`` in ``out``; writes the final model (or LoRA adapter, ``lora_r > 0``)
    and the processor atomically to ``out/final``. Returns ``steps``, ``first_loss``, ``final_loss``, ``seconds``,
    ``final``.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    if not rows:
        raise TandemError("no image+text rows to train on; pass the rows of read_vlm_jsonl")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    proc = processor if processor is not None else AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = None
    if lora_r > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, task_type="CAUSAL_LM",
                                 target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)")
    dataset = Dataset.from_list(_open_images(rows))
    args = sft_args(out, epochs, batch_size, lr, max_length, save_steps, seed, progress, remove_unused_columns=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=proc,
                         peft_config=peft_config)
    return train_and_save(trainer, out, proc)


_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' }}{% if m['content'] is string %}{{ m['content'] }}"
             "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}{{ '<image> ' }}{% else %}"
             "{{ p['text'] }}{% endif %}{% endfor %}{% endif %}{% if m['role'] == 'assistant' %}{{ ' </s>' }}"
             "{% endif %}{{ ' ' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}")


def make_tiny_vlm(folder: str | Path, words: list[str] | None = None, seed: int = 0) -> Path:
    """Build and save a tiny LLaVA (CLIP 32×32 vision tower, 2-layer Llama, ~50k parameters) and its processor.

    The tokenizer is word-level over ``words`` (split on whitespace) plus ``<pad> <unk> <s> </s> <image>`` and the
    role markers; anything else maps to ``<unk>``. Everything is built from local configs; nothing is downloaded.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = Path(folder)
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<|system|>", "<|user|>", "<|assistant|>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + [w for t in words or [] for w in t.split()]))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    # 32/8 = 4×4 patches + CLS; the "default" strategy drops CLS, so 16 <image> tokens match 16 features.
    proc = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                          vision_feature_select_strategy="default", chat_template=_TEMPLATE, image_token="<image>")
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, projection_dim=32)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=vocab["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    return folder
