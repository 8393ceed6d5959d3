"""The LLM's candidate search in a process of its own, so it does not share the interpreter lock with the HTTP side.

In one process the batched search runs on a worker thread beside the event loop and the request threads; the tiny
model's search is mostly Python between small tensor ops, so it waits for the lock and runs at about half its rate
(docs/benchmarks.md, "Load"). :class:`LLMProcess` loads the same backend in a child process (``spawn``) and answers
``beam_candidates`` over a pipe: the histories go down, the lists come back, an error comes back as its message. The
child dies with the server (:func:`tandem.process.die_with_parent`); a child that died is started again on the next
call, and the call that found it dead raises :class:`ConnectionError` (the service answers that request degraded).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np

from llm_cloud.backends import CandidateList, UnknownItemsError
from tandem.process import child_env

log = logging.getLogger("tandem.service")

START_TIMEOUT_S = 300.0


def _child(conn, env: dict[str, str], checkpoint: str, backend: str, threads: int, options: dict) -> None:
    """The child's loop: load the backend once, then answer ``(histories, n)`` until the pipe closes. ``env`` is set
    here, before torch is imported (importing this module does not import it), so the parent's own environment is
    never touched."""
    os.environ.update(env)
    from tandem.process import die_with_parent

    die_with_parent()
    import torch

    from llm_cloud.backends import load_backend

    torch.set_num_threads(threads)
    try:
        llm = load_backend(backend, checkpoint, **options)
    except Exception as exc:  # noqa: BLE001 - the parent reports why
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", llm.artifact.n_items))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        histories, n = msg
        try:
            out = llm.beam_candidates(histories, n)
            conn.send(("ok", [(c.items, c.scores, c.cold_start) for c in out]))
        except UnknownItemsError as exc:
            conn.send(("unknown", exc.unknown))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    llm.close()


class LLMProcess:
    """``beam_candidates`` of the checkpoint folder ``checkpoint``, computed in a child process (module docstring).
    Calls are serialised (one pipe); the service's batcher is its only caller. The child starts loading at once;
    :meth:`ready` waits for it (the first search does too), so a server can load everything else meanwhile."""

    def __init__(self, checkpoint: str | Path, backend: str = "transformers", threads: int = 1,
                 options: dict | None = None) -> None:
        self.checkpoint, self.backend, self.threads = str(checkpoint), backend, threads
        self.options = dict(options or {})
        self.n_items = 0
        self._lock = threading.Lock()
        self._proc = self._conn = None
        self._loading = False
        self._spawn()

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        env = child_env({"OMP_NUM_THREADS": str(self.threads), "TQDM_DISABLE": "1"})  # dies with this process
        proc = ctx.Process(target=_child, args=(child, env, self.checkpoint, self.backend, self.threads, self.options),
                           name="tandem-llm", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._loading = proc, parent, True

    def ready(self) -> LLMProcess:
        """Wait until the child has loaded the checkpoint; RuntimeError with the reason when it could not."""
        with self._lock:
            self._await_loaded()
        return self

    def _await_loaded(self) -> None:
        if not self._loading:
            return
        proc, parent = self._proc, self._conn
        if not parent.poll(START_TIMEOUT_S):
            self._close_pipe()
            raise RuntimeError(f"the LLM process did not start within {START_TIMEOUT_S:g} s")
        try:
            kind, value = parent.recv()
        except EOFError:
            code = proc.exitcode
            self._close_pipe()
            raise RuntimeError(f"the LLM process exited while loading (exit code {code})") from None
        if kind != "ready":
            self._close_pipe()
            raise RuntimeError(f"the LLM process could not load {self.checkpoint}: {value}")
        self.n_items, self._loading = int(value), False
        log.info("LLM process %d serves %s (%s, %d thread(s))", proc.pid, self.checkpoint, self.backend, self.threads)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def beam_candidates(self, histories: list[np.ndarray], n: int) -> list[CandidateList]:
        """As :meth:`LLMBackend.beam_candidates`, in the child."""
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                log.warning("the LLM process is gone (exit code %s); starting it again",
                            None if self._proc is None else self._proc.exitcode)
                self._close_pipe()
                self._spawn()
            self._await_loaded()
            try:
                self._conn.send(([np.asarray(h, dtype=np.int64) for h in histories], n))
                reply = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._close_pipe()
                raise ConnectionError(f"the LLM process died during a search ({type(exc).__name__}); it is "
                                      f"started again on the next call") from None
        kind, value = reply[0], reply[1]
        if kind == "ok":
            return [CandidateList(items, scores, cold) for items, scores, cold in value]
        if kind == "unknown":
            raise UnknownItemsError(value, self.n_items)
        raise RuntimeError(f"the LLM process failed: {value}")

    def _close_pipe(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(5)
        self._proc, self._loading = None, False

    def close(self) -> None:
        """Stop the child."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(None)
                except OSError:
                    pass
            if self._proc is not None:
                self._proc.join(10)
            self._close_pipe()
