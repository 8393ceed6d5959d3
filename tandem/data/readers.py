"""Readers that turn files on disk into a raw interaction table and an optional item table.

Two formats:

* a folder of RecBole atomic files (``NAME.inter``, optional ``NAME.item``) whose header cells are ``field:type``;
* a delimited text file (``.csv``/``.tsv``) with user/item/time/rating columns chosen by name, and an optional item
  file with text columns.

Both return columns ``user``, ``item``, ``order`` (and ``rating`` when known); ids stay strings here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from tandem.errors import TandemError

ATOMIC_TEXT_TYPES = ("token", "token_seq")


def _read_table(path: Path, sep: str, encoding: str, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, encoding=encoding, dtype=str, keep_default_na=False,
                           quoting=3 if sep == "\t" else 0, engine="c")
    except UnicodeDecodeError as exc:
        raise TandemError(
            f"{what} {path} is not valid {encoding} (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
            f"pass --encoding with the file's real encoding, e.g. --encoding latin-1"
        ) from None
    except LookupError:
        raise TandemError(f"unknown text encoding {encoding!r} for {path}; pass a Python codec name such as "
                          f"utf-8 or latin-1 to --encoding") from None
    except pd.errors.EmptyDataError:
        raise TandemError(f"{what} {path} is empty; point --dataset at a file with a header and rows") from None
    except pd.errors.ParserError as exc:
        raise TandemError(f"{what} {path} could not be parsed with separator {sep!r} ({exc}); "
                          f"check --sep") from None


def _require(df: pd.DataFrame, col: str, option: str, path: Path) -> None:
    if col not in df.columns:
        raise TandemError(
            f"column {col!r} (from {option}) is missing in {path}; columns found: {', '.join(map(str, df.columns))}; "
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


def read_atomic(folder: Path, encoding: str, user_col: str, item_col: str, time_col: str | None,
                rating_col: str | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    name = find_atomic_name(folder)
    inter_path = folder / f"{name}.inter"
    inter, _ = _strip_atomic_header(_read_table(inter_path, "\t", encoding, "interaction file"))
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
        table, types = _strip_atomic_header(_read_table(item_path, "\t", encoding, "item file"))
        _require(table, item_col, "--item-col", item_path)
        text_cols = [c for c in table.columns if c != item_col and types[c] in ATOMIC_TEXT_TYPES]
        items = table[[item_col, *text_cols]].rename(columns={item_col: "item"})
    return out, items


def infer_sep(path: Path, sep: str | None) -> str:
    if sep is not None:
        return "\t" if sep in ("\\t", "tab") else sep
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_delimited(path: Path, sep: str | None, encoding: str, user_col: str, item_col: str, time_col: str | None,
                   rating_col: str | None) -> pd.DataFrame:
    table = _read_table(path, infer_sep(path, sep), encoding, "interaction file")
    _require(table, user_col, "--user-col", path)
    _require(table, item_col, "--item-col", path)
    out = pd.DataFrame({"user": table[user_col], "item": table[item_col]})
    if time_col:
        _require(table, time_col, "--time-col", path)
        order = pd.to_numeric(table[time_col], errors="coerce")
        if order.isna().any():  # not numbers: try dates
            order = pd.to_datetime(table[time_col], errors="coerce").astype("int64")
        if order.isna().any():
            raise TandemError(f"column {time_col!r} in {path} has values that are neither numbers nor dates; "
                              f"fix them or leave out --time-col to keep file order")
        out["order"] = order.to_numpy()
    else:
        warnings.warn(f"no --time-col for {path}: keeping file order within each user", stacklevel=2)
        out["order"] = range(len(out))
    if rating_col:
        _require(table, rating_col, "--rating-col", path)
        out["rating"] = pd.to_numeric(table[rating_col], errors="coerce")
    return out


def read_item_file(path: Path, sep: str | None, encoding: str, id_col: str, text_cols: list[str]) -> pd.DataFrame:
    table = _read_table(path, infer_sep(path, sep), encoding, "item file")
    _require(table, id_col, "--item-id-col", path)
    for col in text_cols:
        _require(table, col, "--item-text-cols", path)
    cols = text_cols or [c for c in table.columns if c != id_col]
    return table[[id_col, *cols]].rename(columns={id_col: "item"})
