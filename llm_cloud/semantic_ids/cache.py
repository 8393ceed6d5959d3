"""Semantic IDs for a dataset from a given folder, or built once and reused from ``$TANDEM_HOME/sids/``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tandem.data.dataset import SequenceDataset
from tandem.data.options import DatasetOptions
from tandem.errors import TandemError
from tandem.paths import tandem_home


def cache_dir(ds: SequenceDataset) -> Path:
    """``$TANDEM_HOME/sids/<dataset>-<fingerprint>/``; the name is made safe for paths."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(ds.name).name)
    return tandem_home() / "sids" / f"{name}-{ds.fingerprint()}"


def load_codes(folder: str | Path, ds: SequenceDataset) -> np.ndarray:
    """codes.npy (N+1, L+1) of ``folder``, refused unless it was built for these interactions and items."""
    folder = Path(folder)
    if not (folder / "codes.npy").is_file():
        raise TandemError(f"semantic IDs folder {folder} has no codes.npy; build it with "
                          f"`tandem sids build --dataset {ds.name} --out {folder}`")
    codes = np.load(folder / "codes.npy", allow_pickle=False)
    config_file = folder / "config.json"
    fingerprint = json.loads(config_file.read_text()).get("data_fingerprint") if config_file.is_file() else None
    if codes.shape[0] != ds.n_items + 1 or (fingerprint and fingerprint != ds.fingerprint()):
        raise TandemError(f"semantic IDs in {folder} were built for other data ({codes.shape[0] - 1} items, "
                          f"fingerprint {fingerprint}); this dataset has {ds.n_items} items, fingerprint "
                          f"{ds.fingerprint()}; rebuild them with `tandem sids build` on the same data")
    return codes


def resolve_codes(ds_options: DatasetOptions, ds: SequenceDataset, sids: str | Path | None) -> tuple[np.ndarray, Path]:
    """(codes (N+1, L+1), folder they came from): ``sids`` if given, else the cache, built on first use (rq)."""
    if sids is not None:
        return load_codes(sids, ds), Path(sids)
    folder = cache_dir(ds)
    if not (folder / "codes.npy").is_file():
        from llm_cloud.semantic_ids.build import build_semantic_ids, save_semantic_ids

        codes, report = build_semantic_ids(ds_options)
        save_semantic_ids(folder, codes, report)
    return load_codes(folder, ds), folder
