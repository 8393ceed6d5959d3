"""Shared fixtures: small datasets written as real files, and a synthetic sequential pattern."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


def cyclic_sequences(n_users: int = 120, n_items: int = 40, length: int = 24, noise: float = 0.1,
                     seed: int = 0) -> list[np.ndarray]:
    """Each user walks item -> item+step (mod n_items) with a per-user step in {1, 2}, plus some random jumps.

    Every item is about equally popular, so a popularity ranker is near random, while the next item is predictable
    from the last two items.
    """
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        step = int(rng.integers(1, 3))
        cur = int(rng.integers(0, n_items))
        seq = []
        for _ in range(length):
            seq.append(cur + 1)
            cur = int(rng.integers(0, n_items)) if rng.random() < noise else (cur + step) % n_items
        seqs.append(np.array(seq, dtype=np.int64))
    return seqs


def write_atomic(folder: Path, sequences: list[np.ndarray], with_items: bool = True, string_ids: bool = False) -> Path:
    """Write sequences as a RecBole atomic dataset folder (NAME.inter with typed headers, NAME.item)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.name

    def item_raw(i: int) -> str:
        return f"it{i:03d}" if string_ids else str(i)

    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u, seq in enumerate(sequences):
        for t, item in enumerate(seq):
            user = f"u{u}" if string_ids else str(u + 1)
            lines.append(f"{user}\t{item_raw(int(item))}\t{1 + (t % 5)}\t{1000 + t}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    if with_items:
        items = sorted({int(i) for s in sequences for i in s})
        rows = ["item_id:token\ttitle:token_seq\tgenre:token_seq\tyear:float"]
        rows += [f"{item_raw(i)}\tMovie {i}\tDrama Comedy\t1999" for i in items]
        (folder / f"{name}.item").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="session")
def cyclic() -> list[np.ndarray]:
    return cyclic_sequences()


@pytest.fixture()
def atomic_dataset(tmp_path: Path, cyclic) -> Path:
    return write_atomic(tmp_path / "cyc", cyclic)


@pytest.fixture(scope="session")
def service_store(tmp_path_factory) -> Path:
    """The service tests' tiny store (tests/test_service.py:build_store), built once per session; tests only read it."""
    from tests.test_service import build_store

    return build_store(tmp_path_factory.mktemp("service") / "store")
