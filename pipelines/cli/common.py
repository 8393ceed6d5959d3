"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tandem.errors import TandemError
from tandem.io import atomic_write_json


class LazyParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose arguments may be added on first use (parse or help) by a ``build(parser)``
    callback. Commands whose flags come from a tier's config dataclass use it, so building the whole ``tandem`` parser
    imports no tier and no torch; only the command that runs (or shows its help) imports what it needs."""

    def __init__(self, *args, build: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending = [build] if build is not None else []

    def complete(self) -> LazyParser:
        """Add the deferred arguments now (idempotent)."""
        while self._pending:
            self._pending.pop(0)(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.complete()
        return super().format_help()

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()


def add_parser(sub, name: str, help_text: str, handler,
               build: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """A subcommand ``name`` that runs ``handler(args)``; ``build(parser)``, if given, adds its arguments lazily."""
    parser = sub.add_parser(name, help=help_text, description=help_text, build=build)
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


def checked_config(cls, args: argparse.Namespace, **overrides):
    """The config dataclass ``cls`` from the parsed flags, validated; a bad value is a one-line user error (exit 2)."""
    from tandem.config import dataclass_from_args

    try:
        cfg = dataclass_from_args(cls, args, **overrides)
        cfg.validate()
    except ValueError as exc:
        raise as_user_error(exc) from None
    return cfg


def dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
