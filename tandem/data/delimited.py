"""Delimited text tables (CSV/TSV): the dialect flags, separator detection (``--sep auto``) and a table reader that
obeys ``--on-bad-lines``.

A table is read with pandas' C parser first, which is fast. pandas refuses a row with too many fields but pads a
short row with empty strings, so a file it refuses, or one whose last column has an empty value (where a short row
may hide), is read again with the ``csv`` module: it checks every record's field count against the header and gives
the 1-based line number where each malformed record starts. Values stay strings.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tandem.data.report import FileReport
from tandem.data.textio import check_encoding, decoding_errors, open_text
from tandem.errors import TandemError

SNIFF_CHARS = 64 * 1024
SNIFF_DELIMITERS = ",;\t|"
FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB) is too small for long descriptions


@dataclass(frozen=True)
class TextFormat:
    """The text-file flags as the user gave them (``None``: unset)."""

    sep: str | None = None  # None: from the suffix; "auto": detected
    quotechar: str | None = None  # None: '"', or no quoting for tab-separated files; "none": no quoting
    escapechar: str | None = None
    encoding: str = "utf-8"
    on_bad_lines: str = "error"


@dataclass(frozen=True)
class Dialect:
    """How one file is split into fields."""

    sep: str
    quotechar: str | None  # None: quotes are ordinary characters
    escapechar: str | None = None

    def describe(self) -> str:
        quote = f"quote {self.quotechar!r}" if self.quotechar else "no quoting"
        esc = f", escape {self.escapechar!r}" if self.escapechar else ""
        return f"separator {self.sep!r}, {quote}{esc}"


ATOMIC = Dialect(sep="\t", quotechar=None)  # RecBole atomic files: tab-separated, never quoted


def _one_char(value: str, flag: str, names: dict[str, str]) -> str:
    """``value`` as one character; ``names`` maps spellings such as ``tab`` or ``\\\\`` to it."""
    value = names.get(value.lower(), value)
    if len(value) != 1:
        raise TandemError(f"{flag} must be one character, got {value!r}; e.g. {flag} ';'")
    return value


def resolve_dialect(path: Path, fmt: TextFormat, report: FileReport) -> Dialect:
    """The dialect to read ``path`` with: the flags, the file's suffix, or (``--sep auto``) the file's first 64 KiB.
    A detected dialect is recorded on ``report`` and announced with a warning."""
    quote: str | None = None
    if fmt.quotechar is not None and fmt.quotechar.lower() != "none":
        quote = _one_char(fmt.quotechar, "--quotechar", {})
    escape = _one_char(fmt.escapechar, "--escapechar", {"\\\\": "\\"}) if fmt.escapechar else None
    if fmt.sep is not None and fmt.sep.lower() == "auto":
        sep, sniffed_quote = sniff(path, fmt.encoding)
        if fmt.quotechar is None:
            quote = sniffed_quote
        report.detected_sep, report.detected_quotechar = sep, quote
        detail = f"quote {quote!r}" if quote else "no quoting"
        warnings.warn(f"detected separator {sep!r} and {detail} in {path}; pass --sep to override", stacklevel=2)
    else:
        if fmt.sep is not None:
            sep = _one_char(fmt.sep, "--sep", {"\\t": "\t", "tab": "\t"})
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
        if fmt.quotechar is None and sep != "\t":
            quote = '"'
    if sep in (quote, escape):
        raise TandemError(f"--sep {sep!r} is also the quote or escape character; pass different characters")
    return Dialect(sep=sep, quotechar=quote, escapechar=escape)


def sniff(path: Path, encoding: str) -> tuple[str, str | None]:
    """Separator and quote character of ``path``, detected by :class:`csv.Sniffer` from its first 64 KiB. A
    tab-separated sample without a quoted field is read without quoting, as tab-separated files usually are."""
    with decoding_errors(path, encoding, "file"), open_text(path, encoding) as f:
        sample = f.read(SNIFF_CHARS)
    if len(sample) == SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]  # whole lines only
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=SNIFF_DELIMITERS)
    except csv.Error:
        raise TandemError(f"could not detect the separator of {path} from its first 64 KiB (tried "
                          f"{', '.join(map(repr, SNIFF_DELIMITERS))}); pass --sep, e.g. --sep ';' or --sep tab"
                          ) from None
    sep, quote = dialect.delimiter, dialect.quotechar or '"'
    if sep == "\t" and not any(cell.startswith(quote) for line in sample.splitlines() for cell in line.split(sep)):
        return sep, None
    return sep, quote


SKIP_HINT = "to skip such lines pass --on-bad-lines skip (or warn)"


def bad_line_hint(dialect: Dialect) -> str:
    hints = []
    if dialect.escapechar is None:
        hints.append("if quotes inside fields are escaped with a backslash (\\\") pass --escapechar '\\\\'")
    hints.append("if fields are quoted with another character pass --quotechar (or --quotechar none)")
    return "; ".join([*hints, SKIP_HINT])


def read_table(path: Path, dialect: Dialect, encoding: str, what: str, report: FileReport,
               hint: str | None = None) -> pd.DataFrame:
    """All rows of ``path`` as strings, columns named by its header; malformed lines go to ``report.bad_line``
    with ``hint`` (default: the dialect flags to try, and ``--on-bad-lines``)."""
    check_encoding(encoding, path)
    table = _read_fast(path, dialect, encoding, what)
    if table is None or (len(table.columns) > 1 and bool((table.iloc[:, -1] == "").any())):
        table = _read_checked(path, dialect, encoding, what, report, hint or bad_line_hint(dialect))
    return table


def _read_fast(path: Path, dialect: Dialect, encoding: str, what: str) -> pd.DataFrame | None:
    """pandas' C parser; ``None`` when some row has too many fields."""
    try:
        with decoding_errors(path, encoding, what), warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # rows longer than the header: not silently cut
            return pd.read_csv(
                path, sep=dialect.sep, quotechar=dialect.quotechar or '"', escapechar=dialect.escapechar,
                quoting=csv.QUOTE_NONE if dialect.quotechar is None else csv.QUOTE_MINIMAL, encoding=encoding,
                dtype=str, keep_default_na=False, index_col=False, engine="c")
    except pd.errors.EmptyDataError:
        raise TandemError(f"{what} {path} is empty; point --dataset at a file with a header and rows") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        return None


@contextmanager
def _field_limit() -> Iterator[None]:
    old = csv.field_size_limit(FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _column_names(header: list[str]) -> list[str]:
    """Header cells as pandas names them: ``Unnamed: i`` for an empty cell, ``a.1`` for a second ``a``."""
    names: list[str] = []
    for i, cell in enumerate(header):
        name, n = cell or f"Unnamed: {i}", 0
        while (name if n == 0 else f"{name}.{n}") in names:
            n += 1
        names.append(name if n == 0 else f"{name}.{n}")
    return names


def _read_checked(path: Path, dialect: Dialect, encoding: str, what: str, report: FileReport,
                  hint: str) -> pd.DataFrame:
    """The ``csv`` module's reading, record by record, with each record's field count checked against the header."""
    header: list[str] | None = None
    rows: list[list[str]] = []
    with decoding_errors(path, encoding, what), _field_limit(), open_text(path, encoding) as f:
        reader = csv.reader(f, delimiter=dialect.sep, quotechar=dialect.quotechar or '"',
                            escapechar=dialect.escapechar, doublequote=True, strict=False,
                            quoting=csv.QUOTE_NONE if dialect.quotechar is None else csv.QUOTE_MINIMAL)
        while True:
            start = reader.line_num + 1  # the physical line this record starts on
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                report.bad_line(start, f"could not be read ({exc}; {dialect.describe()})", hint)
                continue
            if not record:  # a blank line
                continue
            if header is None:
                header = record
            elif len(record) != len(header):
                report.bad_line(start, f"has {len(record)} fields where the header has {len(header)} "
                                       f"({dialect.describe()})", hint)
            else:
                rows.append(record)
    if header is None:
        raise TandemError(f"{what} {path} is empty; point --dataset at a file with a header and rows")
    return pd.DataFrame(rows, columns=_column_names(header), dtype=str)
