"""Config dataclasses that double as CLI flags.

Each field carries ``metadata={"help": ...}``; :func:`add_dataclass_arguments` turns the fields into ``--flag-name``
options and :func:`dataclass_from_args` reads them back. Flags default to ``None`` on the command line so that a
dataclass default (or a model-specific default) applies when the user says nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from tandem.errors import TandemError

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> Any:
    """``int | None`` -> ``int``; ``Literal[...]`` stays as it is."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, skip: tuple[str, ...] = ()
) -> None:
    """Add one option per field of dataclass ``cls``; the help text comes from the field metadata."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.metadata.get("cli", True):
            continue
        tp = _base_type(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = field.metadata.get("help", "")
        if default is not None and not isinstance(default, bool):
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        elif typing.get_origin(tp) in (list, tuple):
            kwargs["type"] = str
            kwargs["help"] += " (comma-separated)"
        else:
            kwargs["type"] = tp
        parser.add_argument(_flag(field.name), **kwargs)


def dataclass_from_args(cls: type[T], ns: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the parsed flags; flags left unset keep the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        value = getattr(ns, field.name, None)
        if value is None:
            continue
        tp = _base_type(hints[field.name])
        if typing.get_origin(tp) in (list, tuple) and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        values[field.name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def read_yaml_mapping(path: str | Path, what: str, hint: str) -> dict:
    """The mapping a YAML config file holds; a missing file, bad YAML or a non-mapping is a one-line TandemError
    that starts with ``what`` (e.g. "merge config") and, for a missing file, ends with ``hint``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TandemError(f"{what} {path} does not exist; {hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TandemError(f"{what} {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise TandemError(f"{what} {path} must be a mapping of keys to values, got {type(raw).__name__}")
    return raw
