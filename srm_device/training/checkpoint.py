"""SRM checkpoints: ``model.safetensors`` plus ``config.json``, written atomically.

``config.json`` records the model name and hyperparameters, the number of items, the dataset options and a
fingerprint of the data, so evaluation reloads the same data and refuses a model trained on other data.
A damaged or mismatched checkpoint raises :class:`TandemError` (exit code 2 at the CLI).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from srm_device.models import SequentialRecommender, SRMConfig, build_model, model_names
from tandem.data.dataset import SequenceDataset
from tandem.data.options import DatasetOptions, load_dataset
from tandem.errors import TandemError
from tandem.io import atomic_output, atomic_write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FORMAT_VERSION = 1


def save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "tandem-srm"})


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; any damage or shape mismatch becomes a TandemError."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TandemError(f"checkpoint weights {path} are unreadable ({exc}); retrain into a fresh --out "
                          f"folder") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else "")
        raise TandemError(f"checkpoint weights {path} do not match its config.json ({detail}); the folder is "
                          f"mixed up or damaged: retrain into a fresh --out folder") from None


def write_config(folder: Path, meta: dict) -> None:
    atomic_write_json(folder / CONFIG, {"format_version": FORMAT_VERSION, **meta})


def read_config(folder: Path) -> dict:
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise TandemError(f"checkpoint folder {folder} does not exist; pass the --out folder of `tandem train srm`")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise TandemError(f"{folder} is not a Tandem SRM checkpoint: {CONFIG} is missing; pass the --out folder of "
                          f"`tandem train srm`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TandemError(f"checkpoint config {path} is corrupt ({exc}); retrain into a fresh --out folder") from None
    missing = [k for k in ("model", "model_config", "n_items") if k not in meta]
    if missing:
        raise TandemError(f"checkpoint config {path} lacks {', '.join(missing)}; it was not written by "
                          f"`tandem train srm`, or is damaged")
    if meta["model"] not in model_names():
        raise TandemError(f"checkpoint {path} names model {meta['model']!r}; known models are "
                          f"{', '.join(model_names())}")
    return meta


def model_from_meta(meta: dict) -> SequentialRecommender:
    try:
        config = SRMConfig(**meta["model_config"])
        return build_model(meta["model"], int(meta["n_items"]), config)
    except (TypeError, ValueError) as exc:
        raise TandemError(f"checkpoint config has invalid model settings ({exc}); retrain into a fresh --out "
                          f"folder") from None


def check_trained_on(checkpoint: str | Path, meta: dict, ds: SequenceDataset, fix: str) -> None:
    """Refuse dataset ``ds`` unless the checkpoint was trained on it (same item count and data fingerprint)."""
    if int(meta["n_items"]) != ds.n_items:
        raise TandemError(f"checkpoint {checkpoint} was trained on {meta['n_items']} items but dataset {ds.name!r} "
                          f"has {ds.n_items}; {fix}")
    if meta.get("data_fingerprint") and meta["data_fingerprint"] != ds.fingerprint():
        raise TandemError(f"checkpoint {checkpoint} was trained on other data (fingerprint {meta['data_fingerprint']}"
                          f", this dataset {ds.fingerprint()}); {fix}")


def load_checkpoint(folder: str | Path) -> tuple[SequentialRecommender, dict]:
    """Return the trained (best-validation) model in eval mode and its config.json."""
    folder = Path(folder)
    meta = read_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise TandemError(f"checkpoint {folder} has no {WEIGHTS} yet (training never finished an epoch); run "
                          f"`tandem train srm --out {folder}` to resume")
    model = model_from_meta(meta)
    load_weights(model, weights)
    return model.eval(), meta


def load_srm_with_data(checkpoint: str | Path, ds_options: DatasetOptions | None = None):
    """(model, meta, dataset): a trained SRM and its own dataset (or ``ds_options``), refusing data it was not
    trained on."""
    model, meta = load_checkpoint(checkpoint)
    own = ds_options is None
    if own:
        ds_options = DatasetOptions(**meta.get("dataset", {}))
    ds = load_dataset(ds_options)
    fix = "its dataset changed since training: retrain the SRM" if own else "use the same --dataset and filters"
    check_trained_on(checkpoint, meta, ds, fix)
    return model, meta, ds
