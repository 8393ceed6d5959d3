"""The configs shipped with the package, found through :mod:`importlib.resources`, so an installed wheel finds them
as a checkout does: SFT run configs (``sft_tiny``, ``sft_smollm``) and SRM search spaces (``tune_sasrec``,
``tune_gru4rec``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tandem.errors import TandemError


def names(prefix: str = "") -> list[str]:
    """The packaged configs' names (without ``.yaml``) that start with ``prefix``."""
    return sorted(p.name[: -len(".yaml")] for p in files(__name__).iterdir()
                  if p.name.endswith(".yaml") and p.name.startswith(prefix))


def packaged(name: str) -> Path:
    """The path of the packaged config ``name`` (``sft_tiny`` or ``sft_tiny.yaml``)."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in names():
        raise TandemError(f"no packaged config {name!r}; packaged configs are {', '.join(names())}")
    return Path(str(files(__name__).joinpath(f"{stem}.yaml")))


def resolve(value: str, prefix: str = "sft_", flag: str = "--config") -> Path:
    """``value`` as a YAML file: an existing path, else (for a bare name without a folder) the packaged config of
    that name among those starting with ``prefix``."""
    path = Path(value)
    if path.is_file() or len(path.parts) > 1:
        return path  # a path that does not exist is reported by the reader, with the path
    stem = value[: -len(".yaml")] if value.endswith(".yaml") else value
    if stem in names(prefix):
        return packaged(stem)
    raise TandemError(f"{flag} {value}: the file does not exist, and no packaged config has that name; pass a "
                      f"YAML path or one of {', '.join(names(prefix))}")
