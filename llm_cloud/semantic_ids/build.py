"""Build semantic IDs for a dataset's items and save them (TIGER, arXiv 2305.05065; CoFiRec, arXiv 2511.22707).

Output folder (written atomically as a whole):
- ``codes.npy``: (N+1, L+1) int64; row i is item i's L codes plus the trailing level; row 0 (padding) is all -1;
- ``report.json``: collisions before/after the trailing level, usage and perplexity per level, build time;
- ``config.json``: mode, method, levels, codebook size, seed, fields, SRM, dataset options and fingerprint.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from llm_cloud.semantic_ids import embed
from llm_cloud.semantic_ids.disambiguate import disambiguate
from llm_cloud.semantic_ids.report import build_report
from tandem.data.options import DatasetOptions, load_dataset
from tandem.errors import TandemError
from tandem.io import atomic_directory, atomic_write_json, atomic_write_npy

MODES = ("rq", "cofi")
METHODS = ("kmeans", "vae")
COFI_LEVELS = 3
OUTPUT_FILES = ("codes.npy", "report.json", "config.json")


def validate(mode: str, levels: int, codebook_size: int, method: str, srm_dir: str | Path | None,
             vae_steps: int = 300, pca_dim: int | None = 32) -> None:
    """Refuse bad settings before any data is loaded (TandemError: one line, exit code 2)."""
    if mode not in MODES:
        raise TandemError(f"--mode {mode!r} is unknown; use one of {', '.join(MODES)}")
    if method not in METHODS:
        raise TandemError(f"--method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if codebook_size < 2:
        raise TandemError(f"--codebook-size must be >= 2, got {codebook_size}")
    if levels < 1:
        raise TandemError(f"--levels must be >= 1, got {levels}")
    if pca_dim is not None and pca_dim < 0:
        raise TandemError(f"--pca-dim must be >= 0 (0 = no reduction), got {pca_dim}")
    if vae_steps < 1:
        raise TandemError(f"--vae-steps must be >= 1, got {vae_steps}")
    if mode == "cofi":
        if srm_dir is None:
            raise TandemError("--mode cofi needs the collaborative level from a trained SRM; pass --srm DIR "
                              "(the --out folder of `tandem train srm` on this dataset)")
        if levels != COFI_LEVELS:
            raise TandemError(f"--mode cofi has exactly {COFI_LEVELS} levels (category, title, collaborative), got "
                              f"--levels {levels}; drop --levels")
        if method != "kmeans":
            raise TandemError("--method vae applies to --mode rq; cofi mode uses k-means on each level")


def _rq_codes(emb: np.ndarray, levels: int, codebook_size: int, method: str, seed: int, vae_steps: int,
              pca_dim: int | None) -> tuple[np.ndarray, list[str], dict]:
    """rq mode on text embeddings (N, 384): (codes (N, L), level names, extra report entries)."""
    if method == "vae":
        from llm_cloud.semantic_ids.rq_vae import train_rq_vae

        vae = train_rq_vae(emb, levels, codebook_size, steps=vae_steps, seed=seed)
        extra = {"vae_loss_first_last": [vae.losses[0], vae.losses[-1]]}
        names = ["RQ-VAE latent, level 1"] + [f"RQ-VAE latent residual {i + 1}" for i in range(1, levels)]
        return vae.codes, names, extra  # (N, L)
    from llm_cloud.semantic_ids.rq_kmeans import pca_reduce, rq_kmeans

    z, explained = pca_reduce(emb, pca_dim, seed)  # (N, k)
    fit = rq_kmeans(z, levels, codebook_size, seed)
    extra = {"pca": {"dim": int(z.shape[1]), "explained_variance": explained} if pca_dim else None,
             "residual_mse": [float((z ** 2).sum(1).mean())] + fit.residual_mse}
    space = f"PCA-{z.shape[1]} text" if pca_dim else "text"
    names = [f"{space} (all fields)"] + [f"{space} residual {i + 1}" for i in range(1, levels)]
    return fit.codes, names, extra  # (N, L)


def build_semantic_ids(dataset_options: DatasetOptions, mode: str = "rq", levels: int = 3, codebook_size: int = 256,
                       method: str = "kmeans", srm_dir: str | Path | None = None, seed: int = 2020,
                       category_fields: list[str] | None = None, title_fields: list[str] | None = None,
                       vae_steps: int = 300, pca_dim: int | None = 32) -> tuple[np.ndarray, dict]:
    """Semantic IDs of every item: (codes (N+1, L+1) int64 with row 0 = -1, report dict with a ``config`` entry).

    ``pca_dim``: rq mode with k-means quantises the text embeddings projected on this many principal components
    (None or 0: the raw 384 dimensions); see :mod:`llm_cloud.semantic_ids.rq_kmeans` for why.
    """
    validate(mode, levels, codebook_size, method, srm_dir, vae_steps, pca_dim)
    start = time.perf_counter()
    ds = load_dataset(dataset_options)
    cat = ds.catalogue
    extra: dict = {}
    if mode == "cofi":
        from llm_cloud.semantic_ids.cofi import cofi_codes, collaborative_embeddings, detect_fields

        category_fields, title_fields = detect_fields(cat, category_fields, title_fields)
        collab = collaborative_embeddings(srm_dir, ds)  # (N, d), checked against the dataset first
        t0 = time.perf_counter()
        cat_emb = embed.item_embeddings(ds.name, cat, category_fields, empty="unknown")  # (N, 384)
        title_emb = embed.item_embeddings(ds.name, cat, title_fields)  # (N, 384)
        embed_seconds = time.perf_counter() - t0
        codes = cofi_codes([cat_emb, title_emb, collab], codebook_size, seed)  # (N, 3)
        names = ["category: " + "+".join(category_fields), "title: " + "+".join(title_fields),
                 f"collaborative: SRM d={collab.shape[1]}"]
    else:
        if category_fields or title_fields:
            raise TandemError("--category-fields and --title-fields apply to --mode cofi; rq mode embeds all fields")
        t0 = time.perf_counter()
        emb = embed.item_embeddings(ds.name, cat)  # (N, 384) from all text fields, title first
        embed_seconds = time.perf_counter() - t0
        codes, names, extra = _rq_codes(emb, levels, codebook_size, method, seed, vae_steps, pca_dim)
    full = disambiguate(codes)  # (N, L+1)
    out = np.full((ds.n_items + 1, full.shape[1]), -1, dtype=np.int64)  # (N+1, L+1), row 0 padding
    out[1:] = full
    report = build_report(codes, full, codebook_size, names)
    report.update(extra)
    report["embed_seconds"] = embed_seconds
    report["build_seconds"] = time.perf_counter() - start
    report["config"] = {
        "mode": mode, "method": method if mode == "rq" else "kmeans", "levels": levels,
        "codebook_size": codebook_size, "trailing_level_size": report["trailing_level_size"],
        "code_shape": list(out.shape), "seed": seed, "embedding_model": embed.MODEL_NAME,
        "category_fields": category_fields, "title_fields": title_fields,
        "srm": str(srm_dir) if srm_dir is not None else None, "vae_steps": vae_steps if method == "vae" else None,
        "pca_dim": pca_dim if mode == "rq" and method == "kmeans" else None,
        "dataset": dataset_options.to_dict(), "dataset_name": ds.name, "n_items": ds.n_items,
        "data_fingerprint": ds.fingerprint(),
    }
    return out, report


def check_out_dir(out_dir: str | Path) -> Path:
    """Refuse an output folder that holds anything but an earlier build: it is replaced as a whole."""
    out_dir = Path(out_dir)
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())
                             and not set(OUTPUT_FILES) <= {p.name for p in out_dir.iterdir()}):
        raise TandemError(f"--out {out_dir} exists and does not hold semantic IDs; it would be replaced as a whole, "
                          f"so pass a new or empty folder")
    return out_dir


def save_semantic_ids(out_dir: str | Path, codes: np.ndarray, report: dict) -> Path:
    """Write codes.npy, report.json and config.json into ``out_dir``, replacing it atomically as a whole.

    An existing non-empty folder is replaced only when it holds an earlier build (all three files).
    """
    body = {k: v for k, v in report.items() if k != "config"}
    out_dir = check_out_dir(out_dir)
    with atomic_directory(out_dir) as tmp:
        atomic_write_npy(tmp / "codes.npy", codes)
        atomic_write_json(tmp / "report.json", body)
        atomic_write_json(tmp / "config.json", report["config"])
    return Path(out_dir)
