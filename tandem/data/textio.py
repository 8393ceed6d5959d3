"""Opening input text files: gzip by the ``.gz`` suffix, ``--encoding`` checked once, and decoding or gzip failures
turned into one-line :class:`~tandem.errors.TandemError` messages."""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tandem.errors import TandemError


def check_encoding(encoding: str, path: Path) -> str:
    """The codec name to read with: ``encoding`` itself, or ``utf-8-sig`` for UTF-8 (so a byte-order mark is not
    read as text). An unknown codec is a TandemError."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise TandemError(f"unknown text encoding {encoding!r} for {path}; pass a Python codec name such as "
                          f"utf-8 or latin-1 to --encoding") from None
    return "utf-8-sig" if name == "utf-8" else encoding


def is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def open_text(path: Path, encoding: str) -> TextIO:
    """``path`` opened for reading text (``newline=""``: line ends are left to the parser), gunzipped when its name
    ends in ``.gz``."""
    codec = check_encoding(encoding, path)
    if is_gzip(path):
        return gzip.open(path, "rt", encoding=codec, newline="")  # type: ignore[return-value]
    return open(path, encoding=codec, newline="")  # noqa: SIM115 - the caller closes it


@contextmanager
def decoding_errors(path: Path, encoding: str, what: str) -> Iterator[None]:
    """Turn a decoding or gzip failure while reading ``path`` into a TandemError that names the fix."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise TandemError(
            f"{what} {path} is not valid {encoding} (cannot decode byte {exc.object[exc.start:exc.start + 1]!r}); "
            f"pass --encoding with the file's real encoding, e.g. --encoding latin-1"
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise TandemError(f"{what} {path} is not a complete gzip file ({exc}); a file whose name ends in .gz must "
                          f"be gzip-compressed") from None
