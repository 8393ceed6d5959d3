"""Where Tandem keeps its cache: ``$TANDEM_HOME``, default ``~/.cache/tandem``."""

from __future__ import annotations

import os
from pathlib import Path


def tandem_home() -> Path:
    """The cache root. Datasets and fetched packages live here and are never committed."""
    return Path(os.environ.get("TANDEM_HOME") or Path.home() / ".cache" / "tandem").expanduser()


def datasets_dir() -> Path:
    return tandem_home() / "datasets"
