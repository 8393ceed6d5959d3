"""The generative recommender's checkpoint folder.

- the Hugging Face model (``config.json``, ``model.safetensors``, ``generation_config.json``);
- the tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ...);
- ``codes.npy``: the semantic IDs (N+1, L+1) the model was trained on;
- ``tandem_llm.json``: dataset options and fingerprint, the run config, the training summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tandem.errors import TandemError
from tandem.io import atomic_write_json, atomic_write_npy

META_FILE = "tandem_llm.json"


def write_extras(folder: Path, codes: np.ndarray, meta: dict) -> None:
    """Write codes.npy and tandem_llm.json next to the saved model and tokenizer."""
    atomic_write_npy(folder / "codes.npy", codes)
    atomic_write_json(folder / META_FILE, meta)


def load_llm_checkpoint(folder: str | Path):
    """(model in eval mode, tokenizer, codes (N+1, L+1), meta) from a folder written by the SFT script."""
    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        raise TandemError(f"{folder} is not a generative-recommender checkpoint (no {META_FILE}); pass the --out "
                          f"folder of `tandem llm sft`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = json.loads((folder / META_FILE).read_text())
    codes = np.load(folder / "codes.npy", allow_pickle=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, tokenizer, codes, meta
