"""On-disk cache of the cloud LLM's candidate lists (LSC4Rec, arXiv 2502.08667, step 2: the LLM generates candidate
lists for the training prefixes once; the device SRM is then fine-tuned, and later calibrated, on them).

Beam search costs about 0.1 s per list on CPU, so the lists are generated once and kept. Layout of the folder::

    meta.json           identity of the LLM checkpoint that produced every list here
    shard-*.npz         keys (m, 20) uint8 sha1 digests, ids (m, n) int64, scores (m, n) float64

A row is keyed by sha1(int64 history bytes + n). Missing rows are generated chunk by chunk and each chunk is written as
one atomically replaced shard, so a killed run loses at most the chunk in progress and resumes where it stopped. A
shard that cannot be read is deleted with a warning and its lists are generated again.
Lists from another LLM checkpoint are refused: they would silently mix two models' candidates.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
import zipfile
from pathlib import Path

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


class CandidateCache:
    """Cached top-``n`` LLM candidate lists under ``folder``; counts ``hits`` and ``misses`` (rows, per process)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0
        self._rows: dict[bytes, tuple[np.ndarray, np.ndarray]] | None = None

    # --- identity -------------------------------------------------------------------------------------------------
    def _check_llm(self, backend) -> None:
        folder = Path(backend.artifact.folder)
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
    def lists(self, backend, histories: list[np.ndarray], n: int, progress: bool | None = None,
              chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """ids (u, n) int64 best first and scores (u, n) for ``histories``: cached rows as they are, missing rows
        generated by ``backend`` (trie-constrained beam search) ``chunk`` users at a time, each chunk saved at once."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_llm(backend)
        rows = self._load()
        keys = [history_key(h, n) for h in histories]
        todo: dict[bytes, np.ndarray] = {}  # distinct missing keys, first history seen for each
        for key, h in zip(keys, histories):
            if key not in rows and key not in todo:
                todo[key] = np.asarray(h, dtype=np.int64)
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            source = LLMSource(backend)
            missing = list(todo.items())
            bar = tqdm(total=len(missing), desc="LLM candidate lists", unit="list",
                       disable=None if progress is None else not progress)
            for start in range(0, len(missing), chunk):
                part = missing[start : start + chunk]
                ids, scores = source.topn([h for _, h in part], n)  # (c, n), (c, n)
                self._write_shard([k for k, _ in part], ids, scores)
                for row, (key, _) in enumerate(part):
                    rows[key] = (ids[row], scores[row])
                bar.update(len(part))
            bar.close()
        ids = np.stack([rows[k][0] for k in keys]) if keys else np.zeros((0, n), dtype=np.int64)  # (u, n)
        scores = np.stack([rows[k][1] for k in keys]) if keys else np.zeros((0, n))  # (u, n)
        return ids.astype(np.int64), scores.astype(np.float64)
