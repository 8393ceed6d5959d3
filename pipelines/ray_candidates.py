"""Batch candidate generation on Ray Data (the ``[ray]`` extra): the list engine behind ``--engine ray``.

The missing histories become a Ray Dataset; ``map_batches`` runs :class:`ListMaker`, a callable class that loads the
chosen backend once per actor and calls its ``beam_candidates`` (the batched trie-constrained beam search). Ray's own
LLM batch API (``ray.data.llm``) is not used: it samples or greedily decodes, and has no constrained beam search over a
catalogue's semantic IDs. The rows stream back to the driver, which writes each batch as one shard of the
:class:`~pipelines.candidate_cache.CandidateCache` as it arrives, so a killed job keeps every finished batch and a rerun
sends only the missing histories. The cache format does not depend on the engine: a store built this way serves
with plain ``tandem serve``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem.errors import TandemError

log = logging.getLogger(__name__)
RAY_INSTALL = 'pip install -e ".[ray]"'
PAD = -1  # history padding inside the dataset's fixed-width rows (item ids start at 1)


def require_ray():
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise TandemError(f"--engine ray needs Ray, which is not installed; install it with {RAY_INSTALL}") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` made here), or start a local one; a no-op when
    this process is already connected."""
    ray = require_ray()
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, log_to_driver=False, include_dashboard=False)
    except ConnectionError as exc:
        raise TandemError(f"cannot reach the Ray cluster at {address!r} ({exc}); start one with `ray start --head` or "
                          f"leave out --ray-address for a local one") from None


def pad(histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Histories as fixed-width rows: ``(m, t)`` int64 padded at the end with PAD, and lengths ``(m,)``."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)  # (m,)
    rows = np.full((len(histories), max(1, int(lengths.max(initial=0)))), PAD, dtype=np.int64)  # (m, t)
    for i, h in enumerate(histories):
        rows[i, : len(h)] = h
    return rows, lengths


class ListMaker:
    """One Ray Data actor: loads the backend once, then turns batches of padded histories into top-``n`` lists."""

    def __init__(self, folder: str, backend: str, n: int, threads: int) -> None:
        import torch

        from llm_cloud.backends import load_backend

        torch.set_num_threads(max(1, threads))
        self.n = n
        self.backend = load_backend(backend, folder)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from eval.candidates import LLMSource

        histories = [row[:length] for row, length in zip(batch["history"], batch["length"])]  # (b,) of (t_i,)
        ids, scores = LLMSource(self.backend).topn(histories, self.n)  # (b, n), (b, n)
        return {"row": batch["row"], "ids": ids, "scores": scores}


@dataclass
class RayEngine:
    """The LLM's lists made by ``actors`` Ray Data actors of ``threads`` CPUs each, ``batch_size`` histories per call.

    ``address``: an existing cluster (``auto`` or ``ray://…``); None starts a local one sized for the actors."""

    folder: Path
    backend: str = "transformers"
    address: str | None = None
    actors: int = 1
    batch_size: int = 64
    threads: int = 1

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        for name in ("actors", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise TandemError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def generate(self, histories: list[np.ndarray], n: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        connect(self.address, num_cpus=max(os.cpu_count() or 1, self.actors * self.threads))
        import ray

        rows, lengths = pad(histories)
        blocks = max(1, -(-len(histories) // self.batch_size))  # one block per batch, so batches keep their order
        ds = ray.data.from_items([{"row": i, "history": rows[i], "length": lengths[i]} for i in range(len(rows))],
                                 override_num_blocks=blocks)
        lists = ds.map_batches(ListMaker, batch_size=self.batch_size, batch_format="numpy",
                               fn_constructor_kwargs={"folder": str(self.folder), "backend": self.backend, "n": n,
                                                      "threads": self.threads},
                               compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=self.threads)
        for batch in lists.iter_batches(batch_size=None, batch_format="numpy"):
            yield batch["row"].astype(np.int64), batch["ids"].astype(np.int64), batch["scores"].astype(np.float64)
