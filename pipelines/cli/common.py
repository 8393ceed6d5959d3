"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tandem.errors import TandemError
from tandem.io import atomic_write_json


def add_parser(sub, name: str, help_text: str, handler) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def write_json(path: str | None, obj: dict) -> None:
    if path:
        atomic_write_json(Path(path), obj)
        print(f"wrote {path}", file=sys.stderr)


def refuse_flags_with_config(given: list[str]) -> None:
    """A command takes its settings from ``--config`` or from flags, not both: ``given`` = the flags also set."""
    if given:
        raise TandemError(f"--config and {given[0]} were both given; put every setting in the YAML file or pass "
                          f"them all as flags")


def as_user_error(exc: ValueError) -> TandemError:
    return TandemError(str(exc))


def dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
