"""Readers that turn files on disk into a raw interaction table and an optional item table.

Three formats:

* a folder of RecBole atomic files (``NAME.inter``, optional ``NAME.item``) whose header cells are ``field:type``;
* a delimited text file (``.csv``/``.tsv``/``.txt``) with user/item/time/rating columns chosen by name;
* a JSON-lines file (``.jsonl``/``.json``, optionally gzipped) whose records hold those fields.

An item file (``--item-file``) is delimited or JSON/Python-literal lines, chosen by its suffix. Interaction tables have
columns ``user``, ``item``, ``order`` (and ``rating`` when known); ids stay strings here. Item tables have ``item`` plus
text columns, with HTML entities (``&amp;``, ``&#39;``) unescaped. Each file read appends a
:class:`~tandem.data.report.FileReport` to ``reports``.
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path

import pandas as pd

from tandem.data import jsonl
from tandem.data.delimited import ATOMIC, SKIP_HINT, TextFormat, read_table, resolve_dialect
from tandem.data.report import FileReport
from tandem.errors import TandemError

ATOMIC_TEXT_TYPES = ("token", "token_seq")


def unescape(texts: pd.Series) -> pd.Series:
    """HTML entities in item text decoded: ``&amp;`` -> ``&``, ``&#39;`` -> ``'``."""
    return texts.map(lambda s: html.unescape(s) if "&" in s else s)


def _item_table(ids: pd.Series, texts: dict[str, pd.Series]) -> pd.DataFrame:
    """The ``item`` column plus one unescaped text column each."""
    return pd.DataFrame({"item": ids.to_numpy(), **{col: unescape(values).to_numpy() for col, values in texts.items()}})


def _require(df: pd.DataFrame, col: str, option: str, path: Path, what: str = "column") -> None:
    if col not in df.columns:
        raise TandemError(
            f"{what} {col!r} (from {option}) is missing in {path}; {what}s found: {', '.join(map(str, df.columns))}; "
            f"pass {option} with one of them"
        )


def _strip_atomic_header(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    types = {}
    names = []
    for col in df.columns:
        name, _, typ = str(col).partition(":")
        names.append(name)
        types[name] = typ or "token"
    df.columns = names
    return df, types


def find_atomic_name(folder: Path) -> str:
    """``NAME`` such that ``folder/NAME.inter`` exists (the folder's own name first)."""
    if (folder / f"{folder.name}.inter").is_file():
        return folder.name
    inters = sorted(folder.glob("*.inter"))
    if len(inters) == 1:
        return inters[0].stem
    found = ", ".join(p.name for p in inters) or "none"
    raise TandemError(f"folder {folder} must hold exactly one NAME.inter file (RecBole atomic format); found: "
                      f"{found}; pass the folder of one dataset")


def _order(values: pd.Series, col: str, path: Path) -> pd.Series:
    """Sort keys from a time column: numbers as they are, else dates as integers."""
    order = pd.to_numeric(values, errors="coerce")
    if order.isna().any():  # not numbers: try dates
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": then each value is parsed
            dates = pd.to_datetime(values.astype(str), errors="coerce", utc=True)
            if dates.isna().any():  # one format inferred from the first value; others may differ
                dates = pd.to_datetime(values.astype(str), errors="coerce", utc=True, format="mixed")
        if dates.isna().any():
            bad = values[dates.isna()].iloc[0]
            raise TandemError(f"column {col!r} in {path} has values that are neither numbers nor dates (e.g. "
                              f"{bad!r}); fix them or leave out --time-col to keep file order")
        order = dates.astype("int64")
    return order


def _interactions(table: pd.DataFrame, path: Path, user_col: str, item_col: str, time_col: str | None,
                  rating_col: str | None, what: str = "column") -> pd.DataFrame:
    """The ``user``/``item``/``order``/``rating`` table from a table of named columns."""
    _require(table, user_col, "--user-col", path, what)
    _require(table, item_col, "--item-col", path, what)
    out = pd.DataFrame({"user": table[user_col].astype(str).to_numpy(), "item": table[item_col].astype(str).to_numpy()})
    if time_col:
        _require(table, time_col, "--time-col", path, what)
        out["order"] = _order(table[time_col], time_col, path).to_numpy()
    else:
        warnings.warn(f"no --time-col for {path}: keeping file order within each user", stacklevel=3)
        out["order"] = range(len(out))
    if rating_col:
        _require(table, rating_col, "--rating-col", path, what)
        out["rating"] = pd.to_numeric(table[rating_col], errors="coerce").to_numpy()
    return out


def read_atomic(folder: Path, fmt: TextFormat, user_col: str, item_col: str, time_col: str | None,
                rating_col: str | None, reports: list[FileReport]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A RecBole atomic folder: tab-separated, unquoted; ``fmt`` gives the encoding and ``--on-bad-lines``."""
    name = find_atomic_name(folder)
    inter_path = folder / f"{name}.inter"
    report = FileReport(str(inter_path), "interactions", fmt.on_bad_lines)
    reports.append(report)
    inter = read_table(inter_path, ATOMIC, fmt.encoding, "interaction file", report, SKIP_HINT)
    inter, _ = _strip_atomic_header(inter)
    _require(inter, user_col, "--user-col", inter_path)
    _require(inter, item_col, "--item-col", inter_path)
    out = pd.DataFrame({"user": inter[user_col], "item": inter[item_col]})
    if time_col and time_col in inter.columns:
        out["order"] = pd.to_numeric(inter[time_col], errors="coerce").fillna(0.0).to_numpy()
    else:
        warnings.warn(f"{inter_path} has no {time_col!r} column: keeping file order within each user", stacklevel=2)
        out["order"] = range(len(out))
    if rating_col and rating_col in inter.columns:
        out["rating"] = pd.to_numeric(inter[rating_col], errors="coerce")

    items = None
    item_path = folder / f"{name}.item"
    if item_path.is_file():
        report = FileReport(str(item_path), "items", fmt.on_bad_lines)
        reports.append(report)
        table = read_table(item_path, ATOMIC, fmt.encoding, "item file", report, SKIP_HINT)
        table, types = _strip_atomic_header(table)
        _require(table, item_col, "--item-col", item_path)
        text_cols = [c for c in table.columns if c != item_col and types[c] in ATOMIC_TEXT_TYPES]
        items = _item_table(table[item_col], {col: table[col] for col in text_cols})
    return out, items


def read_delimited(path: Path, fmt: TextFormat, user_col: str, item_col: str, time_col: str | None,
                   rating_col: str | None, reports: list[FileReport]) -> pd.DataFrame:
    """Interactions from a CSV/TSV file read with the ``fmt`` flags."""
    report = FileReport(str(path), "interactions", fmt.on_bad_lines)
    reports.append(report)
    table = read_table(path, resolve_dialect(path, fmt, report), fmt.encoding, "interaction file", report)
    return _interactions(table, path, user_col, item_col, time_col, rating_col)


def read_json_lines(path: Path, fmt: TextFormat, user_col: str, item_col: str, time_col: str | None,
                    rating_col: str | None, reports: list[FileReport]) -> pd.DataFrame:
    """Interactions from a JSON-lines file; every record must hold the named fields (else it is a bad line)."""
    report = FileReport(str(path), "interactions", fmt.on_bad_lines)
    reports.append(report)
    flags = {user_col: "--user-col", item_col: "--item-col"}
    flags.update({col: flag for col, flag in ((time_col, "--time-col"), (rating_col, "--rating-col")) if col})
    table = jsonl.read_records(path, fmt.encoding, report, fields=flags, required=flags)
    return _interactions(table, path, user_col, item_col, time_col, rating_col, what="field")


def read_item_file(path: Path, fmt: TextFormat, id_col: str, text_cols: list[str],
                   reports: list[FileReport]) -> pd.DataFrame:
    """Item metadata: ``id_col`` and the text columns (default: all for a delimited file; for JSON lines the
    fields that hold text or lists of text), as an ``item`` column plus one text column each."""
    if not path.is_file():
        raise TandemError(f"item file {path} (from --item-file) does not exist; pass an existing file")
    report = FileReport(str(path), "items", fmt.on_bad_lines)
    reports.append(report)
    if jsonl.is_json_lines(path):
        fields = {id_col: "--item-id-col", **{c: "--item-text-cols" for c in text_cols}} if text_cols else None
        table = jsonl.read_records(path, fmt.encoding, report, fields=fields, required={id_col: "--item-id-col"},
                                   literals=True)
        _require(table, id_col, "--item-id-col", path, "field")
        cols = text_cols or [c for c in table.columns if c != id_col and jsonl.holds_text(table[c])]
        return _item_table(table[id_col].map(jsonl.as_text), {col: table[col].map(jsonl.as_text) for col in cols})
    table = read_table(path, resolve_dialect(path, fmt, report), fmt.encoding, "item file", report)
    _require(table, id_col, "--item-id-col", path)
    for col in text_cols:
        _require(table, col, "--item-text-cols", path)
    cols = text_cols or [c for c in table.columns if c != id_col]
    return _item_table(table[id_col], {col: table[col] for col in cols})
