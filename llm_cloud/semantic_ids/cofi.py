"""Coarse-to-fine semantic IDs (CoFiRec, arXiv 2511.22707).

Three levels, each tokenised on its own embedding space and decoded in this order:
1. category: MiniLM embedding of the category/genre text alone;
2. title: MiniLM embedding of the title/name/description text;
3. collaborative: the item embeddings of a trained SRM (rows 1..N of ``model.item_embeddings()``).

What we do: each level is a separate k-means (k = min(C, distinct points)) on its own L2-normalised space. Levels
are independent, not residual: a residual within the level-1 cluster is zero for an item alone in its cluster, so
its level-2 token would say nothing about its title. Independence keeps every level meaningful for every item; the
prefix order still makes the ID coarse to fine. Collisions are resolved by the usual trailing level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llm_cloud.semantic_ids.rq_kmeans import kmeans_codes
from tandem.data.dataset import Catalogue, SequenceDataset
from tandem.errors import TandemError

CATEGORY_KEYS = ("genre", "class", "categor", "tag")
TITLE_KEYS = ("title", "name", "desc")


def _check_known(catalogue: Catalogue, names: Sequence[str], flag: str) -> list[str]:
    unknown = [n for n in names if n not in catalogue.fields]
    if unknown:
        raise TandemError(f"{flag} names {', '.join(unknown)}, which the catalogue lacks; its fields are "
                          f"{', '.join(catalogue.fields) or 'none'}")
    return list(names)


def detect_fields(catalogue: Catalogue, category_fields: Sequence[str] | None = None,
                  title_fields: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Category and title fields: as given, else by name (genre/class/category/tag vs title/name/description).

    A field that matches both is a category field. When no title field matches, the catalogue's title field is used.
    """
    fields = list(catalogue.fields)
    if category_fields:
        cats = _check_known(catalogue, category_fields, "--category-fields")
    else:
        cats = [f for f in fields if any(k in f.lower() for k in CATEGORY_KEYS)]
    if title_fields:
        titles = _check_known(catalogue, title_fields, "--title-fields")
    else:
        titles = [f for f in fields if f not in cats and any(k in f.lower() for k in TITLE_KEYS)]
        if not titles and catalogue.title_field and catalogue.title_field not in cats:
            titles = [catalogue.title_field]
    found = ", ".join(fields) or "none"
    if not cats:
        raise TandemError(f"--mode cofi needs a category field (a name with genre/class/category/tag); catalogue "
                          f"fields are {found}; pass --category-fields")
    if not titles:
        raise TandemError(f"--mode cofi needs a title field (a name with title/name/description); catalogue fields "
                          f"are {found}; pass --title-fields")
    return cats, titles


def collaborative_embeddings(srm_dir: str | Path, ds: SequenceDataset) -> np.ndarray:
    """Item embeddings (N, d) of the SRM in ``srm_dir``, refusing one trained on other data."""
    from srm_device.training.checkpoint import check_trained_on, load_checkpoint

    model, meta = load_checkpoint(srm_dir)
    check_trained_on(srm_dir, meta, ds, "pass --srm with an SRM trained on this dataset")
    weights = model.item_embeddings().detach().cpu().numpy()  # (N+1, d), row 0 padding
    return np.asarray(weights[1:], dtype=np.float64)  # (N, d)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)  # (n, d)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (n, d)


def cofi_codes(spaces: Sequence[np.ndarray], codebook_size: int, seed: int = 0) -> np.ndarray:
    """One k-means level per embedding space, coarse to fine: list of (N, d_l) -> codes (N, len(spaces))."""
    n = len(spaces[0])
    codes = np.zeros((n, len(spaces)), dtype=np.int64)  # (N, L)
    for level, space in enumerate(spaces):
        if len(space) != n:
            raise ValueError(f"level {level + 1} has {len(space)} rows, level 1 has {n}")
        codes[:, level], _ = kmeans_codes(_unit(space), codebook_size, seed + level)  # (N,)
    return codes
