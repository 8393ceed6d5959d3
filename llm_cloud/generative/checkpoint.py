"""The generative recommender's checkpoint folder, and :class:`LLMArtifact`, everything in it but the weights.

- the Hugging Face model (``config.json``, ``model.safetensors``, ``generation_config.json``); for the smollm profile
  this is SmolLM2 with the code tokens added and their trained embeddings written in;
- ``adapter/`` (smollm profile only): the PEFT LoRA adapter, kept apart so that vLLM can apply it per request;
- the tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ...);
- ``codes.npy``: the semantic IDs (N+1, L+1) the model was trained on;
- ``prompt.json``: the prompt format (:mod:`llm_cloud.generative.prompts`);
- ``item_counts.npy``: training interactions per item (N+1,), the cold-start ranking for empty histories;
- ``tandem_llm.json``: dataset options and fingerprint, the run config, the training summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from llm_cloud.generative.prompts import PromptFormat
from llm_cloud.generative.tokens import SemanticIdCodec
from tandem.errors import TandemError
from tandem.io import atomic_write_json, atomic_write_npy

META_FILE = "tandem_llm.json"
ADAPTER_DIR = "adapter"
COUNTS_FILE = "item_counts.npy"


def item_counts(sequences: list[np.ndarray], n_items: int) -> np.ndarray:
    """Interactions per item id (N+1,) over ``sequences``; index 0 (padding) is 0."""
    flat = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    return np.bincount(flat, minlength=n_items + 1).astype(np.int64)


def write_extras(folder: Path, codes: np.ndarray, meta: dict, fmt: PromptFormat, counts: np.ndarray) -> None:
    """Write codes.npy, prompt.json, item_counts.npy and tandem_llm.json next to the saved model and tokenizer."""
    atomic_write_npy(folder / "codes.npy", codes)
    atomic_write_npy(folder / COUNTS_FILE, counts)
    fmt.save(folder)
    atomic_write_json(folder / META_FILE, meta)


@dataclass
class LLMArtifact:
    """A checkpoint folder, read without its weights (each backend loads those its own way)."""

    folder: Path
    tokenizer: object
    codes: np.ndarray  # (N+1, L+1)
    meta: dict
    counts: np.ndarray  # (N+1,)

    @cached_property
    def fmt(self) -> PromptFormat:
        return PromptFormat.load(self.folder, SemanticIdCodec.from_tokenizer(self.codes, self.tokenizer))

    @property
    def codec(self) -> SemanticIdCodec:
        return self.fmt.codec

    @property
    def n_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def max_items(self) -> int:
        return int(self.meta["max_items"])

    @property
    def profile(self) -> str:
        return str(self.meta.get("profile", "tiny"))

    @property
    def adapter_dir(self) -> Path | None:
        path = self.folder / ADAPTER_DIR
        return path if path.is_dir() else None

    def load_model(self):
        """The model in eval mode on CPU, with the LoRA adapter (if any) merged into its weights."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.folder)
        if self.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter_dir).merge_and_unload()
        model.eval()
        return model


def load_artifact(folder: str | Path) -> LLMArtifact:
    folder = Path(folder)
    missing = [f for f in (META_FILE, "codes.npy", COUNTS_FILE) if not (folder / f).is_file()]
    if missing:
        raise TandemError(f"{folder} is not a complete generative-recommender checkpoint (missing "
                          f"{', '.join(missing)}); pass the --out folder of `tandem llm sft`, or train it again")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    meta = json.loads((folder / META_FILE).read_text())
    codes = np.load(folder / "codes.npy", allow_pickle=False)
    counts = np.load(folder / COUNTS_FILE, allow_pickle=False)
    # tiny: our WordLevel tokenizer.json as saved; AutoTokenizer would follow config.json (qwen2) and rebuild it as a
    # BPE tokenizer without merges, which turns code-token text such as "<a_1> <b_2>" into no ids at all
    loader = PreTrainedTokenizerFast if meta.get("profile", "tiny") == "tiny" else AutoTokenizer
    return LLMArtifact(folder, loader.from_pretrained(folder), codes, meta, counts)
