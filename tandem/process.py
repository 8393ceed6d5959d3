"""Child processes that do not outlive the process that started them.

``tandem build`` trains the LLM in a second process. If the build is killed (``kill -9``, an out-of-memory kill), an
orphaned trainer would keep writing into the store while a rerun starts another one in the same folder. A child
started with :func:`child_env` calls :func:`die_with_parent` first thing, and Linux then kills it with its parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "TANDEM_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the current process id, for a child that must die with this process."""
    return {**env, PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """In a child started with :func:`child_env`: have the kernel SIGKILL this process when its parent exits, and exit
    now if the parent is already gone. Elsewhere (no variable, not Linux) a no-op."""
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (some sandboxes): the child then behaves as before
    if os.getppid() != int(parent):  # the parent died before the request took effect
        os._exit(1)
