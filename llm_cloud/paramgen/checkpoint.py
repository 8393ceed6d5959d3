"""Loading a trained parameter generator with its Persona codebook, and checking that it belongs to the SRM it is
served with."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.numpy import load_file as load_np

from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import ParamGenerator
from srm_device.head import HeadSpec
from srm_device.persona import Codebook
from srm_device.training import checkpoint as ckpt
from tandem.errors import TandemError


def load_srm_and_data(srm_dir: str | Path):
    """The frozen SRM, its config and its dataset."""
    srm, meta, ds = ckpt.load_srm_with_data(srm_dir)
    srm.requires_grad_(False)
    return srm, meta, ds


def load_paramgen(folder: str | Path) -> tuple[ParamGenerator, Codebook, dict]:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        cfg = ParamGenConfig(**meta["paramgen_config"])
        arrays = load_np(str(folder / "codebook.safetensors"))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise TandemError(f"{folder} is not a complete parameter-generator folder ({exc}); run `tandem train "
                          f"paramgen --srm DIR --out {folder}`") from None
    gen = ParamGenerator(meta["n_items"], HeadSpec(meta["hidden_size"], meta["rank"]), cfg)
    ckpt.load_weights(gen, folder / "model.safetensors")
    return gen.eval(), Codebook(arrays["prototypes"], arrays["basis"]), meta


def load_device_models(srm_dir: str | Path, paramgen_dir: str | Path | None):
    """The device SRM, its dataset, and (optionally) its parameter generator and codebook, checked to belong together.

    Returns (srm, ds, gen | None, book | None, recent_k).
    """
    srm, _, ds = load_srm_and_data(srm_dir)
    if paramgen_dir is None:
        return srm, ds, None, None, 20
    gen, book, meta = load_paramgen(paramgen_dir)
    if meta["n_items"] != srm.n_items or meta["hidden_size"] != srm.config.hidden_size:
        raise TandemError(f"parameter generator {paramgen_dir} was trained for another SRM; train it with "
                          f"`tandem train paramgen --srm {srm_dir}`")
    return srm, ds, gen, book, int(meta["paramgen_config"]["recent_k"])
