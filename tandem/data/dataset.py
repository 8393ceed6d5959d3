"""In-memory dataset: per-user time-ordered item sequences over dense ids, plus the item catalogue.

Dense ids are 1..N for items (0 is padding) and 0..U-1 for users. Re-indexing is deterministic: raw ids are sorted
naturally (numerically when every id is an integer, else as strings), so the same file always gives the same ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from tandem.data.report import FileReport


@dataclass
class Catalogue:
    """Item metadata indexed by dense id (index 0 is the padding item and holds empty values)."""

    raw_ids: list[str]  # len N+1
    fields: dict[str, list[str]] = field(default_factory=dict)  # name -> len N+1 texts
    title_field: str | None = None

    @property
    def n_items(self) -> int:
        return len(self.raw_ids) - 1

    def title(self, item: int) -> str:
        if self.title_field is None:
            return self.raw_ids[item]
        return self.fields[self.title_field][item]

    def search(self, query: str, limit: int) -> tuple[list[int], int]:
        """Items whose title contains ``query`` (case-insensitive): the best ``limit`` ids and how many match.
        Best first: the title starts with the query, then a word of it does, then anywhere; ties by id."""
        q = " ".join(query.lower().split())
        if not q:
            return [], 0
        hits = []
        for item, title in enumerate(self._search_titles[1:], 1):
            at = title.find(q)
            if at >= 0:
                hits.append((0 if at == 0 else 1 if title[at - 1] in " ([-'\"" else 2, item))
        hits.sort()
        return [item for _, item in hits[:limit]], len(hits)

    @cached_property
    def _search_titles(self) -> list[str]:
        """Every title lower-cased with its whitespace collapsed (index 0 is the padding item), made once."""
        return [" ".join(self.title(i).lower().split()) for i in range(self.n_items + 1)]

    def text(self, item: int) -> str:
        """All text fields of an item joined, title first (for embeddings and prompts)."""
        names = sorted(self.fields, key=lambda n: n != self.title_field)
        return " | ".join(self.fields[n][item] for n in names if self.fields[n][item])


@dataclass
class SequenceDataset:
    """Time-ordered interaction sequences, one array of dense item ids per user."""

    name: str
    sequences: list[np.ndarray]  # user -> (len_u,) int64 item ids in 1..N
    user_raw_ids: list[str]
    catalogue: Catalogue
    times: list[np.ndarray] | None = None  # user -> (len_u,) float64 order keys (timestamps, or file positions)
    input_files: list[FileReport] = field(default_factory=list)  # what reading each file noticed (skipped lines)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return self.catalogue.n_items

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def fingerprint(self) -> str:
        """A short hash of the sequences, stored in checkpoints to catch a model evaluated on other data."""
        h = hashlib.sha256(f"{self.n_users}:{self.n_items}".encode())
        for seq in self.sequences:
            h.update(np.asarray(seq, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]


def natural_order(values: pd.Series) -> list[str]:
    """Unique values sorted numerically if all look like integers, else lexicographically."""
    uniq = pd.unique(values.astype(str))
    try:
        return [str(v) for v in sorted(uniq, key=int)]
    except ValueError:
        return sorted(str(v) for v in uniq)


def kcore(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Repeatedly drop users and items with fewer than ``k`` interactions until none remain."""
    if k <= 1:
        return df
    while True:
        ucount = df.groupby("user")["item"].transform("size")
        icount = df.groupby("item")["user"].transform("size")
        keep = (ucount >= k) & (icount >= k)
        if keep.all():
            return df
        df = df[keep]


TIE_ORDERS = ("file", "item", "float32", "float32-minmax")


def _order_key(t: np.ndarray, tie_order: str) -> np.ndarray:
    """The sort key within a user: the time itself, or its float32 rounding (RecBole's float32 tensors)."""
    if tie_order == "float32":
        return t.astype(np.float32)
    if tie_order == "float32-minmax":
        t = t.astype(np.float64)
        span = t.max() - t.min() if len(t) else 0.0
        return ((t - t.min()) / span if span > 0 else np.zeros_like(t)).astype(np.float32)
    return t


def build_dataset(
    name: str, inter: pd.DataFrame, items: pd.DataFrame | None, title_field: str | None = None,
    tie_order: str = "file",
) -> SequenceDataset:
    """Turn a filtered interaction table (columns user, item, order) into dense sequences and a catalogue.

    ``order`` is the sort key within a user (timestamp, or file position). Interactions of one user with the same
    ``order`` (same-second ratings are common in MovieLens) are ordered by ``tie_order``: ``"file"`` keeps their order
    in the input (a stable sort), ``"item"`` sorts them by dense item id, i.e. the natural order of the raw ids, and
    ``"float32"`` orders by the timestamp rounded to float32 (64-second steps for Unix times between 2^29 and 2^30 s,
    1987–2004) and keeps file order inside a step, which is how RecBole 1.2 orders ML-1M (its ``Dataset.build``
    turns float fields into float32 tensors before it sorts by time), and ``"float32-minmax"`` first scales the
    timestamps to [0, 1] over all loaded interactions (after filters), then rounds to float32 (steps of about 1 s on
    ML-100K's seven months), which is how RecBole orders ML-100K, whose packaged dataset properties set
    ``normalize_all: True``. ``bench/srm_vs_recbole.py --targets-only`` measures the agreement. The last items of a
    sequence are the evaluation targets, so this choice decides which item is the test target when the last two share a
    timestamp (or, for ``"float32"``, a 64-second step).
    ``items`` (optional) has an ``item`` column plus text columns.
    """
    if tie_order not in TIE_ORDERS:
        raise ValueError(f"tie_order must be one of {', '.join(TIE_ORDERS)}, got {tie_order!r}")
    item_ids = natural_order(inter["item"])
    user_ids = natural_order(inter["user"])
    item_index = {raw: i + 1 for i, raw in enumerate(item_ids)}
    user_index = {raw: u for u, raw in enumerate(user_ids)}
    df = pd.DataFrame({
        "u": inter["user"].astype(str).map(user_index).to_numpy(),
        "i": inter["item"].astype(str).map(item_index).to_numpy(),
        "t": inter["order"].to_numpy(),
        "pos": np.arange(len(inter)),
    })
    key = _order_key(df["t"].to_numpy(), tie_order)
    df = df.assign(key=key).sort_values(["u", "key", "i" if tie_order == "item" else "pos", "pos"], kind="stable")
    bounds = np.flatnonzero(np.diff(df["u"].to_numpy())) + 1
    sequences = [s.astype(np.int64) for s in np.split(df["i"].to_numpy(), bounds)]
    times = [t.astype(np.float64) for t in np.split(df["t"].to_numpy(), bounds)]

    fields: dict[str, list[str]] = {}
    if items is not None:
        meta = items.assign(item=items["item"].astype(str)).drop_duplicates("item").set_index("item")
        for col in items.columns:
            if col == "item":
                continue
            col_values = meta[col].fillna("").astype(str)
            fields[col] = [""] + [col_values.get(raw, "") for raw in item_ids]
    if title_field is None:
        title_field = next((c for c in fields if "title" in c.lower() or c.lower() == "name"), None)
    catalogue = Catalogue(raw_ids=[""] + item_ids, fields=fields, title_field=title_field)
    return SequenceDataset(name=name, sequences=sequences, user_raw_ids=user_ids, catalogue=catalogue, times=times)
