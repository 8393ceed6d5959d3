"""On-disk cache of the cloud LLM's candidate lists (LSC4Rec, arXiv 2502.08667, step 2: the LLM generates candidate
lists for the training prefixes once; the device SRM is then fine-tuned, and later calibrated, on them).

Beam search costs about 0.1 s per list on CPU, so the lists are generated once and kept. Layout of the folder::

    meta.json           identity of the LLM checkpoint that produced every list here
    shard-*.npz         keys (m, 20) uint8 sha1 digests, ids (m, n) int64, scores (m, n) float64

A row is keyed by sha1(int64 history bytes + n). Missing rows are generated chunk by chunk and each chunk is written as
one atomically replaced shard, so a killed run loses at most the chunk in progress and resumes where it stopped. A
shard that cannot be read is deleted with a warning and its lists are generated again.
Lists from another LLM checkpoint are refused: they would silently mix two models' candidates.

What makes the missing lists is a *list engine* (:class:`ListEngine`): :class:`LocalEngine` runs the backend's batched
beam search in this process; :class:`pipelines.ray_candidates.RayEngine` spreads it over Ray Data actors. Either way
the rows come back here and are written by this one class, so the cache's format does not depend on the engine.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from eval.candidates import LLMSource
from tandem.errors import TandemError
from tandem.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

META = "meta.json"
FORMAT_VERSION = 1
_BLOCK = 1 << 16  # bytes per sampled block of a weights file
_BLOCKS = 16  # sampled blocks per weights file (whole file when smaller than _BLOCK * _BLOCKS)


def history_key(history: np.ndarray, n: int) -> bytes:
    """sha1 digest (20 bytes) of the int64 history and the list length ``n``."""
    h = np.ascontiguousarray(np.asarray(history, dtype=np.int64).reshape(-1))
    return hashlib.sha1(h.tobytes() + int(n).to_bytes(4, "little")).digest()


def file_digest(path: Path) -> str:
    """sha1 of a file's size and of evenly spaced blocks (the whole file when small): cheap even for 500 MB weights,
    and any retrained model differs in every block."""
    size = path.stat().st_size
    sha = hashlib.sha1(str(size).encode())
    with path.open("rb") as fh:
        if size <= _BLOCK * _BLOCKS:
            sha.update(fh.read())
        else:
            for k in range(_BLOCKS):
                fh.seek((size - _BLOCK) * k // (_BLOCKS - 1))
                sha.update(fh.read(_BLOCK))
    return sha.hexdigest()


def llm_identity(folder: str | Path) -> dict:
    """What makes two LLM checkpoints give the same lists: data fingerprint, semantic IDs and weights."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "tandem_llm.json").read_text())
    except (OSError, json.JSONDecodeError):
        meta = {}
    weights = sorted(p for p in folder.rglob("*.safetensors") if p.is_file())
    sha = hashlib.sha1()
    for p in weights:
        sha.update(f"{p.relative_to(folder)}:{file_digest(p)};".encode())
    codes = folder / "codes.npy"
    return {"data_fingerprint": meta.get("data_fingerprint"), "weights": sha.hexdigest(),
            "codes": file_digest(codes) if codes.is_file() else None}


class ListEngine(Protocol):
    """Makes top-``n`` lists for the LLM checkpoint in ``folder``."""

    folder: Path

    def generate(self, histories: list[np.ndarray], n: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yields ``(rows, ids, scores)`` chunks, in any order, until every history has its list: ``rows`` (c,)
        indexes ``histories``, ``ids`` (c, n) int64 best first, ``scores`` (c, n)."""
        ...


@dataclass
class LocalEngine:
    """The backend's batched beam search in this process, ``chunk`` histories at a time."""

    backend: object  # llm_cloud.backends.LLMBackend
    chunk: int = 64

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")

    @property
    def folder(self) -> Path:
        return Path(self.backend.artifact.folder)

    def generate(self, histories: list[np.ndarray], n: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        source = LLMSource(self.backend)
        for start in range(0, len(histories), self.chunk):
            ids, scores = source.topn(histories[start : start + self.chunk], n)  # (c, n), (c, n)
            yield np.arange(start, start + len(ids)), ids, scores


@dataclass
class EngineOptions:
    """Which list engine makes missing lists, and how (``--engine`` and its flags)."""

    kind: str = "local"  # local | ray
    backend: str = "transformers"  # the LLM backend each engine loads
    address: str | None = None  # ray: an existing cluster (auto, ray://...); None starts a local one
    actors: int = 1  # ray: Ray Data actors, each with its own copy of the model
    batch_size: int = 64  # histories per beam-search call (and per shard)
    threads: int = 1  # ray: CPU threads per actor

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise TandemError(f"--engine {self.kind!r} is unknown; use one of {', '.join(ENGINES)}")
        if self.kind == "local" and (self.address or self.actors != 1):
            raise TandemError("--ray-address and --actors need --engine ray; add it, or leave them out")

    def make(self, folder: str | Path, backend=None) -> ListEngine:
        """The engine for the LLM checkpoint ``folder``; ``backend``: that checkpoint already loaded (local only)."""
        if self.kind == "ray":
            from pipelines.ray_candidates import RayEngine, require_ray

            require_ray()
            return RayEngine(Path(folder), self.backend, self.address, self.actors, self.batch_size, self.threads)
        if backend is None:
            from llm_cloud.backends import load_backend

            backend = load_backend(self.backend, folder)
        return LocalEngine(backend, chunk=self.batch_size)


ENGINES = ("local", "ray")


class CandidateCache:
    """Cached top-``n`` LLM candidate lists under ``folder``; counts ``hits`` and ``misses`` (rows, per process)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0
        self._rows: dict[bytes, tuple[np.ndarray, np.ndarray]] | None = None

    # --- identity -------------------------------------------------------------------------------------------------
    def _check_llm(self, folder: Path) -> None:
        ident = llm_identity(folder)
        path = self.folder / META
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise TandemError(f"candidate cache {path} is corrupt ({exc}); delete {self.folder} or use another "
                                  f"--out") from None
            if old.get("llm") != ident:
                raise TandemError(f"candidate cache {self.folder} holds lists of another LLM checkpoint (cached "
                                  f"{old.get('llm_folder')}, now {folder}); delete {self.folder} or use another --out")
            return
        if any(self.folder.glob("shard-*.npz")):
            raise TandemError(f"candidate cache {self.folder} has shards but no {META}, so their LLM is unknown; "
                              f"delete {self.folder} or use another --out")
        atomic_write_json(path, {"format_version": FORMAT_VERSION, "llm": ident, "llm_folder": str(folder)})

    # --- storage --------------------------------------------------------------------------------------------------
    @staticmethod
    def _read_shard(shard: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """keys (m, 20), ids (m, n), scores (m, n); None when the shard cannot be read or its arrays disagree."""
        try:
            with np.load(shard, allow_pickle=False) as z:
                keys, ids, scores = z["keys"], z["ids"], z["scores"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        if keys.ndim != 2 or keys.shape[1] != 20 or ids.shape != scores.shape or len(ids) != len(keys):
            return None
        return keys, ids, scores

    @staticmethod
    def _drop(shard: Path) -> None:
        log.warning("candidate cache: shard %s is unreadable; deleted, its lists are generated again", shard)
        shard.unlink(missing_ok=True)

    def drop_unreadable(self) -> list[Path]:
        """Delete the shards that cannot be read (a disk fault, a foreign write): their lists are generated again
        when they are next asked for. Returns what was deleted, each also logged as a warning."""
        dropped = [shard for shard in sorted(self.folder.glob("shard-*.npz")) if self._read_shard(shard) is None]
        for shard in dropped:
            self._drop(shard)
        if dropped:
            self._rows = None
        return dropped

    def _load(self) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
        if self._rows is None:
            self._rows = {}
            for shard in sorted(self.folder.glob("shard-*.npz")):
                read = self._read_shard(shard)
                if read is None:
                    self._drop(shard)
                    continue
                keys, ids, scores = read
                for row, key in enumerate(keys):
                    self._rows[key.tobytes()] = (ids[row], scores[row])
        return self._rows

    def _write_shard(self, keys: list[bytes], ids: np.ndarray, scores: np.ndarray) -> None:
        buf = io.BytesIO()
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 20)  # (m, 20)
        np.savez(buf, keys=key_arr, ids=ids.astype(np.int64), scores=scores.astype(np.float64))
        atomic_write_bytes(self.folder / f"shard-{uuid.uuid4().hex}.npz", buf.getvalue())

    # --- API ------------------------------------------------------------------------------------------------------
    def lists(self, engine: ListEngine, histories: list[np.ndarray], n: int,
              progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """ids (u, n) int64 best first and scores (u, n) for ``histories``: cached rows as they are, missing rows made
        by ``engine`` (:class:`LocalEngine` for a backend in this process), each chunk it yields saved at once as one
        shard."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_llm(Path(engine.folder))
        rows = self._load()
        keys = [history_key(h, n) for h in histories]
        todo: dict[bytes, np.ndarray] = {}  # distinct missing keys, first history seen for each
        for key, h in zip(keys, histories):
            if key not in rows and key not in todo:
                todo[key] = np.asarray(h, dtype=np.int64)
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            missing_keys, missing = list(todo), list(todo.values())
            bar = tqdm(total=len(missing), desc="LLM candidate lists", unit="list",
                       disable=None if progress is None else not progress)
            for part, ids, scores in engine.generate(missing, n):
                part_keys = [missing_keys[int(r)] for r in part]
                self._write_shard(part_keys, ids, scores)
                for row, key in enumerate(part_keys):
                    rows[key] = (ids[row], scores[row])
                bar.update(len(part_keys))
            bar.close()
            lost = [k for k in missing_keys if k not in rows]
            if lost:
                raise TandemError(f"the list engine returned {len(missing) - len(lost)} of {len(missing)} lists; "
                                  f"run again to make the rest (what was written is kept)")
        ids = np.stack([rows[k][0] for k in keys]) if keys else np.zeros((0, n), dtype=np.int64)  # (u, n)
        scores = np.stack([rows[k][1] for k in keys]) if keys else np.zeros((0, n))  # (u, n)
        return ids.astype(np.int64), scores.astype(np.float64)
