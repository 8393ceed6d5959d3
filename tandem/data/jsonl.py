"""JSON-lines records (one object per line, optionally gzipped) read into a DataFrame.

Review dumps such as Amazon's are JSON lines; the older Amazon metadata dumps hold one Python ``dict`` repr per line
(single quotes). With ``literals=True`` a line that is not JSON is parsed with :func:`ast.literal_eval`, which reads
literals only and never runs code. A line that is neither, or not an object, or lacks a required field, is a
malformed line for ``--on-bad-lines``.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tandem.data.report import FileReport
from tandem.data.textio import decoding_errors, open_text
from tandem.errors import TandemError

SUFFIXES = (".jsonl", ".json", ".ndjson")
HINT = "fix the line, or pass --on-bad-lines skip (or warn) to skip such lines"


def is_json_lines(path: Path) -> bool:
    """Whether ``path`` is named as JSON lines: ``.jsonl``, ``.json`` or ``.ndjson``, optionally with ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in SUFFIXES


def _parse(text: str, literals: bool) -> tuple[Any, str | None]:
    """The value on one line, or ``None`` and why it could not be read."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        reason = f"is not valid JSON ({exc.msg} at column {exc.colno})"
    if literals:
        try:
            return ast.literal_eval(text), None
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            reason = reason.replace("is not valid JSON", "is neither JSON nor a Python literal")
    return None, reason


def read_records(path: Path, encoding: str, report: FileReport, fields: Mapping[str, str] | None = None,
                 required: Mapping[str, str] | None = None, literals: bool = False) -> pd.DataFrame:
    """One row per record of ``path``, one column per field (a field a record lacks is ``None`` there).

    ``fields`` maps the fields to keep to the flag that named them (``None``: keep all). A record without one of the
    ``required`` fields is a malformed line; a field of ``fields`` or ``required`` that no record holds is a
    TandemError naming its flag and the fields found. With ``literals``, a line that is not JSON may be a Python
    literal (as in metadata dumps).
    """
    required = dict(required or {})
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    first = True
    with decoding_errors(path, encoding, "file"), open_text(path, encoding) as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            if first and text.startswith("["):
                raise TandemError(f"{path} is one JSON array, not JSON lines (one object per line); convert it, "
                                  f"e.g. jq -c '.[]' {path.name} > {Path(path.stem).stem}.jsonl")
            first = False
            value, reason = _parse(text, literals)
            if reason is None and not isinstance(value, dict):
                reason = f"holds a {type(value).__name__}, not an object"
            if reason is not None:
                report.bad_line(line_no, reason, HINT)
                continue
            seen.update(value)
            missing = [k for k in required if k not in value]
            if missing:
                report.bad_line(line_no, f"has no {missing[0]!r} field (from {required[missing[0]]}; its fields: "
                                         f"{', '.join(map(str, value))})",
                                f"pass {required[missing[0]]} with the right field name, or --on-bad-lines skip "
                                f"to skip such records")
                continue
            rows.append({k: value.get(k) for k in fields} if fields is not None else value)
    if not seen:
        skipped = f" ({report.skipped:,} malformed lines skipped)" if report.skipped else ""
        raise TandemError(f"{path} holds no JSON records{skipped}; pass a file with one JSON object per line")
    for key, flag in {**(fields or {}), **required}.items():
        if key not in seen:
            raise TandemError(f"field {key!r} (from {flag}) is in no record of {path}; fields found: "
                              f"{', '.join(sorted(map(str, seen))) or 'none'}; pass {flag} with one of them")
    return pd.DataFrame(rows, columns=list(fields) if fields is not None else None)


def as_text(value: Any) -> str:
    """A field value as catalogue text: lists (e.g. nested categories) flattened and joined with ``, ``, mappings
    as ``key: value`` pairs, a missing value as the empty string."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in map(as_text, value) if t)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {as_text(v)}" for k, v in value.items())
    return str(value)


def holds_text(values: pd.Series) -> bool:
    """Whether a field holds text: every present value is a string or a list (numbers and mappings are not)."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(present) and all(isinstance(v, (str, list, tuple)) for v in present)
