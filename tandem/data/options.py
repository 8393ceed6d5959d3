"""The one definition of the ``--dataset`` option and its loader/filter flags, shared by every command.

``DatasetOptions`` is stored inside checkpoints, so ``tandem eval`` reloads exactly the data a model was trained on.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tandem.config import add_dataclass_arguments, dataclass_from_args
from tandem.data import fetch
from tandem.errors import TandemError

if TYPE_CHECKING:
    from tandem.data.dataset import SequenceDataset


@dataclass
class DatasetOptions:
    dataset: str = field(default="ml-100k", metadata={
        "help": "built-in name (ml-100k), a folder of RecBole atomic files, a .csv/.tsv file, or a JSON-lines file "
                "(.jsonl, .json, optionally gzipped: .jsonl.gz)"})
    sep: str | None = field(default=None, metadata={
        "help": "field separator of a CSV/TSV file ('\\t' or tab for tabs; auto detects it and the quote character "
                "from the file's first 64 KiB); inferred from the extension if unset"})
    quotechar: str | None = field(default=None, metadata={
        "help": "quote character of a CSV/TSV file, or none to read quotes as ordinary text (default: '\"'; "
                "tab-separated files are read without quoting unless this is given)"})
    escapechar: str | None = field(default=None, metadata={
        "help": "escape character of a CSV/TSV file, e.g. '\\\\' for MySQL-style exports that write \\\" inside "
                "quoted fields (default: none)"})
    on_bad_lines: Literal["error", "skip", "warn"] = field(default="error", metadata={
        "help": "what to do with a malformed line (a wrong number of fields, a line that is not JSON): error stops "
                "with its line number; skip leaves it out and counts it (tandem data stats shows the count and the "
                "first line numbers); warn also warns about each one"})
    encoding: str = field(default="utf-8", metadata={"help": "text encoding of the input files, e.g. latin-1"})
    user_col: str = field(default="user_id", metadata={"help": "user id column"})
    item_col: str = field(default="item_id", metadata={"help": "item id column"})
    time_col: str | None = field(default=None, metadata={
        "help": "timestamp column; atomic folders use 'timestamp' when present; without one, file order is kept"})
    rating_col: str | None = field(default=None, metadata={
        "help": "rating column, used by --min-rating (atomic folders: 'rating')"})
    min_rating: float | None = field(default=None, metadata={"help": "keep interactions with rating >= this"})
    item_file: str | None = field(default=None, metadata={
        "help": "item metadata for a CSV or JSON-lines dataset: a CSV/TSV file, or JSON lines or Python-literal lines "
                "(.jsonl, .json, optionally .gz)"})
    item_id_col: str | None = field(default=None, metadata={"help": "item id column of --item-file (default: "
                                                                    "--item-col)"})
    item_text_cols: list[str] = field(default_factory=list, metadata={
        "help": "text columns of --item-file kept in the catalogue; list values are joined (default: all; for JSON "
                "lines the fields that hold text)"})
    kcore: int = field(default=0, metadata={"help": "drop users and items with fewer interactions, repeatedly"})
    tie_order: Literal["file", "item", "float32", "float32-minmax"] = field(default="file", metadata={
        "help": "order of one user's interactions that share a timestamp: 'file' keeps the input file's order, "
                "'item' sorts them by item id (natural raw-id order), 'float32' orders by the timestamp rounded to "
                "float32 (64-s steps), then file order, as RecBole 1.2 orders ML-1M; 'float32-minmax' scales "
                "timestamps to [0, 1] first, as RecBole orders ML-100K"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def add_dataset_arguments(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """Add ``--dataset`` and the loader/filter flags (and an optional positional DATASET)."""
    group = parser.add_argument_group("dataset", "which data to load and how to filter it")
    if positional:
        group.add_argument("dataset_pos", nargs="?", metavar="DATASET", help="same as --dataset")
    add_dataclass_arguments(group, DatasetOptions)


def options_from_args(ns: argparse.Namespace) -> DatasetOptions:
    pos = getattr(ns, "dataset_pos", None)
    return dataclass_from_args(DatasetOptions, ns, dataset=pos if pos and not ns.dataset else None)


def _resolve(opts: DatasetOptions) -> tuple[str, Path | None]:
    """('builtin'|'atomic'|'delimited'|'jsonl', path)."""
    from tandem.data.jsonl import is_json_lines

    if opts.dataset in fetch.BUILTIN:
        return "builtin", None
    path = Path(opts.dataset).expanduser()
    if path.is_dir():
        return "atomic", path
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return "delimited", path
    if path.is_file() and is_json_lines(path):
        return "jsonl", path
    if path.is_file():
        raise TandemError(f"dataset file {path} has extension {path.suffix!r}; supported are .csv, .tsv and .txt "
                          f"(pass --sep for .txt), JSON lines (.jsonl, .json, .ndjson, optionally .gz), or a folder "
                          f"of RecBole atomic files")
    raise TandemError(
        f"unknown dataset {opts.dataset!r}: known names are {', '.join(fetch.known_names())}; otherwise pass an "
        f"existing folder of RecBole atomic files, a .csv/.tsv file or a JSON-lines file"
    )


def load_dataset(opts: DatasetOptions) -> SequenceDataset:
    """Load, filter (rating, k-core) and densely re-index the dataset that ``opts`` names. What reading each file
    noticed (skipped lines, a detected separator) is on the result's ``input_files``."""
    from tandem.data import readers  # pandas: imported when a dataset is loaded, not when a parser is built
    from tandem.data.dataset import build_dataset, kcore
    from tandem.data.delimited import TextFormat
    from tandem.data.report import FileReport

    kind, path = _resolve(opts)
    if kind == "builtin":
        path = fetch.fetch(opts.dataset)
        kind = "atomic"
    assert path is not None
    fmt = TextFormat(sep=opts.sep, quotechar=opts.quotechar, escapechar=opts.escapechar, encoding=opts.encoding,
                     on_bad_lines=opts.on_bad_lines)
    reports: list[FileReport] = []
    cols = (opts.user_col, opts.item_col)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        if kind == "atomic":
            inter, items = readers.read_atomic(path, fmt, *cols, opts.time_col or "timestamp",
                                               opts.rating_col or "rating", reports)
            name = opts.dataset if opts.dataset in fetch.BUILTIN else path.name
        else:
            read = readers.read_delimited if kind == "delimited" else readers.read_json_lines
            inter = read(path, fmt, *cols, opts.time_col, opts.rating_col, reports)
            items = None
            if opts.item_file:
                items = readers.read_item_file(Path(opts.item_file).expanduser(), fmt,
                                               opts.item_id_col or opts.item_col, opts.item_text_cols, reports)
            name = Path(path.stem).stem if path.suffix.lower() == ".gz" else path.stem
    n_raw = len(inter)
    if opts.min_rating is not None:
        if "rating" not in inter.columns:
            raise TandemError(f"--min-rating {opts.min_rating} needs a rating column; pass --rating-col with the "
                              f"column that holds ratings")
        inter = inter[inter["rating"] >= opts.min_rating]
    inter = kcore(inter, opts.kcore)
    if len(inter) == 0:
        raise TandemError(
            f"dataset {name!r} is empty after filtering ({n_raw} interactions before; min_rating={opts.min_rating}, "
            f"kcore={opts.kcore}); lower --min-rating or --kcore"
        )
    if items is not None:
        items = items[items["item"].astype(str).isin(set(inter["item"].astype(str)))]
    ds = build_dataset(name, inter.reset_index(drop=True), items, tie_order=opts.tie_order)
    ds.input_files = reports
    return ds
