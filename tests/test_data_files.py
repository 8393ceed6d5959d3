"""Real-world input files: MySQL-style CSV exports (escaped quotes, latin-1, HTML entities), malformed lines under
``--on-bad-lines``, ``--sep auto``, gzipped JSON-lines review dumps with Python-literal metadata, implicit ratings of
0, and a property test that the CSV reader gives back what Python's csv module wrote in any common dialect."""

from __future__ import annotations

import csv
import gzip
import html
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.data import readers
from tandem.data.delimited import TextFormat
from tandem.data.options import DatasetOptions, load_dataset
from tandem.errors import TandemError
from tests.conftest import write_atomic

USERS = [f"u{u:02d}" for u in range(10)]
TITLES = {  # item id -> (title as a MySQL export writes it, the title as it reads)
    "i1": ('Caf\xe9 \\"Noir; Blanc\\" &amp; Co', 'Café "Noir; Blanc" & Co'),
    "i2": ("Tom &amp; Jerry", "Tom & Jerry"),
    "i3": ("Schindler&#39;s List", "Schindler's List"),
    "i4": ('The \\"Na\xefve\\" Years', 'The "Naïve" Years'),
}


def stats_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``tandem data stats ARGS`` through the CLI's main(): exit code, stdout, stderr."""
    from pipelines.cli.main import main

    with warnings.catch_warnings():
        code = main(["data", "stats", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def mysql_export(tmp_path: Path, bad: dict[int, str] | None = None) -> tuple[Path, Path]:
    """An interaction file and an item file as ``SELECT ... INTO OUTFILE FIELDS TERMINATED BY ';' ENCLOSED BY '"'
    ESCAPED BY '\\\\'`` writes them, in latin-1: 10 users x 3 items. ``bad`` maps 1-based line numbers of the
    interaction file to malformed lines put there."""
    lines = ['"user_id";"item_id";"ts";"rating"']
    items = list(TITLES)
    for u, user in enumerate(USERS):
        for k in range(3):
            lines.append(f'"{user}";"{items[(u + k) % len(items)]}";"{1000 + 10 * u + k}";"{1 + (u + k) % 5}"')
    for line_no, text in sorted((bad or {}).items()):
        lines.insert(line_no - 1, text)
    inter = tmp_path / "ratings.csv"
    inter.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    item_lines = ['"item_id";"title";"genre"'] + [f'"{i}";"{raw}";"Drama"' for i, (raw, _) in TITLES.items()]
    item_file = tmp_path / "movies.csv"
    item_file.write_bytes(("\n".join(item_lines) + "\n").encode("latin-1"))
    return inter, item_file


def mysql_options(inter: Path, item_file: Path, **kw) -> DatasetOptions:
    return DatasetOptions(dataset=str(inter), sep=";", encoding="latin-1", user_col="user_id", item_col="item_id",
                          time_col="ts", rating_col="rating", item_file=str(item_file), **kw)


def test_mysql_export_with_escaped_quotes_latin1_and_entities(tmp_path):
    inter, item_file = mysql_export(tmp_path)
    ds = load_dataset(mysql_options(inter, item_file, escapechar="\\"))
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (10, 4, 30)
    cat = ds.catalogue
    assert cat.title_field == "title"
    for raw, (_, title) in TITLES.items():
        assert cat.title(cat.raw_ids.index(raw)) == title
    assert ds.input_files[0].skipped == 0 and ds.input_files[1].role == "items"
    # '\\' as a shell passes it for --escapechar '\\' is one backslash too
    again = load_dataset(mysql_options(inter, item_file, escapechar="\\\\"))
    assert again.catalogue.fields == cat.fields


def test_escaped_quotes_without_escapechar_fail_with_the_line_and_the_fix(tmp_path):
    inter, item_file = mysql_export(tmp_path)
    with pytest.raises(TandemError) as info:
        load_dataset(mysql_options(inter, item_file))
    msg = str(info.value)
    assert "\n" not in msg
    # read without the escape, \" ends the quoted field, so the ';' of 'Noir; Blanc' and of '&amp;' split it
    assert f"line 2 of {item_file} has 5 fields where the header has 3" in msg
    assert "--escapechar '\\\\'" in msg and "--quotechar" in msg and "--on-bad-lines skip" in msg


BAD = {4: '"u98";"i1";"1";"5";"extra"', 9: '"u99";"i2"', 12: "garbage", 15: '"a";"b";"c";"d";"e"', 18: '"x"',
       21: '"u97";"i3";"5"'}


def test_on_bad_lines_skip_counts_and_stats_print_them(tmp_path, capsys):
    inter, item_file = mysql_export(tmp_path, BAD)
    with pytest.raises(TandemError, match=f"line 4 of {inter} has 5 fields where the header has 4"):
        load_dataset(mysql_options(inter, item_file, escapechar="\\"))
    ds = load_dataset(mysql_options(inter, item_file, escapechar="\\", on_bad_lines="skip"))
    assert ds.n_interactions == 30 and ds.n_users == 10  # every bad line left out, every good one kept
    report = ds.input_files[0]
    assert report.skipped == 6 and report.skipped_lines == [4, 9, 12, 15, 18]  # the first five

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset(mysql_options(inter, item_file, escapechar="\\", on_bad_lines="warn"))
    skipped = [str(w.message) for w in caught if "skipped line" in str(w.message)]
    assert len(skipped) == 6 and skipped[0].startswith(f"skipped line 4 of {inter}: has 5 fields")

    out_json = tmp_path / "stats.json"
    code, out, _ = stats_cli(capsys, str(inter), "--sep", ";", "--encoding", "latin-1", "--escapechar", "\\\\",
                             "--user-col", "user_id", "--item-col", "item_id", "--time-col", "ts",
                             "--item-file", str(item_file), "--on-bad-lines", "skip", "--json", str(out_json))
    assert code == 0
    assert (f"skipped lines 6 malformed in {inter} (first lines 4, 9, 12, 15, 18); --on-bad-lines skip"
            in out.splitlines())
    files = json.loads(out_json.read_text())["input_files"]
    assert files[0]["skipped"] == 6 and files[0]["skipped_lines"] == [4, 9, 12, 15, 18]
    assert files[1]["path"] == str(item_file) and files[1]["skipped"] == 0

    code, _, err = stats_cli(capsys, str(inter), "--sep", ";", "--encoding", "latin-1", "--user-col", "user_id",
                             "--item-col", "item_id", "--escapechar", "\\")
    assert code == 2 and err.count("tandem: error: line 4 of") == 1 and "Traceback" not in err


def test_short_rows_are_malformed_too(tmp_path):
    """pandas pads a short row with empty strings; the reader counts it as malformed instead."""
    path = tmp_path / "log.csv"
    path.write_text("user,item,ts\na,x,1\nb,y\na,y,2\n")
    with pytest.raises(TandemError, match="line 3 of .* has 2 fields where the header has 3"):
        load_dataset(DatasetOptions(dataset=str(path), user_col="user", item_col="item", time_col="ts"))
    ds = load_dataset(DatasetOptions(dataset=str(path), user_col="user", item_col="item", time_col="ts",
                                     on_bad_lines="skip"))
    assert ds.n_interactions == 2 and ds.input_files[0].skipped_lines == [3]
    assert ds.input_files[0].summary() == [f"skipped lines 1 malformed in {path} (line 3); --on-bad-lines skip"]


def test_atomic_folder_entities_and_bad_lines(tmp_path):
    folder = write_atomic(tmp_path / "toy", [np.array([1, 2, 3]), np.array([2, 3])])
    item = folder / "toy.item"
    item.write_text(item.read_text().replace("Movie 2", "Romeo &amp; Juliet"))
    inter = folder / "toy.inter"
    inter.write_text(inter.read_text() + "9\t1\n")  # a line of 2 fields in a file of 4
    with pytest.raises(TandemError) as info:
        load_dataset(DatasetOptions(dataset=str(folder)))
    assert f"line 7 of {inter} has 2 fields" in str(info.value) and "--escapechar" not in str(info.value)
    ds = load_dataset(DatasetOptions(dataset=str(folder), on_bad_lines="skip"))
    assert ds.n_interactions == 5 and ds.input_files[0].skipped_lines == [7]
    assert ds.catalogue.title(2) == "Romeo & Juliet" and ds.catalogue.title(3) == "Movie 3"


def test_dates_in_mixed_formats_and_a_value_that_is_no_date(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\na,x,2020-01-02\na,y,2020-01-01 10:00\nb,x,2021-05-05T00:00:00+02:00\n")
    ds = load_dataset(DatasetOptions(dataset=str(path), user_col="u", item_col="i", time_col="t"))
    assert [ds.catalogue.raw_ids[i] for i in ds.sequences[0]] == ["y", "x"]  # 1 Jan 10:00 before 2 Jan
    path.write_text("u,i,t\na,x,2020-01-02\na,y,soon\n")
    with pytest.raises(TandemError, match="neither numbers nor dates \\(e.g. 'soon'\\)"):
        load_dataset(DatasetOptions(dataset=str(path), user_col="u", item_col="i", time_col="t"))


@pytest.mark.parametrize(("sep", "quoted"), [(";", True), ("\t", False)])
def test_sep_auto_detects_and_reports(tmp_path, capsys, sep, quoted):
    rows = [["user", "item", "ts"]] + [[f"u{u}", f"Item, no. {u % 3}", str(100 + u)] for u in range(12)]
    path = tmp_path / "log.txt"
    with path.open("w", newline="") as f:
        csv.writer(f, delimiter=sep, quoting=csv.QUOTE_ALL if quoted else csv.QUOTE_MINIMAL).writerows(rows)
    opts = DatasetOptions(dataset=str(path), sep="auto", user_col="user", item_col="item", time_col="ts")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(opts)
    assert ds.n_users == 12 and ds.n_items == 3 and "Item, no. 1" in ds.catalogue.raw_ids
    report = ds.input_files[0]
    assert report.detected_sep == sep
    assert report.detected_quotechar == ('"' if quoted else None)
    quote = "quote '\"'" if quoted else "no quoting"
    assert any(f"detected separator {sep!r} and {quote} in {path}" in str(w.message) for w in caught)
    code, out, _ = stats_cli(capsys, str(path), "--sep", "auto", "--user-col", "user", "--item-col", "item")
    assert code == 0 and f"separator     {sep!r} and {quote} detected in {path} (--sep auto)" in out


def test_sep_auto_that_cannot_decide_asks_for_sep(tmp_path):
    path = tmp_path / "one_column.csv"
    path.write_text("user\nann\nbob\n")
    with pytest.raises(TandemError, match="could not detect the separator .*; pass --sep"):
        load_dataset(DatasetOptions(dataset=str(path), sep="auto"))


def write_reviews(path: Path, bad: dict[int, str] | None = None) -> None:
    """An Amazon-style review dump: one JSON object per line, gzipped when ``path`` ends in .gz."""
    lines = []
    for u in range(6):
        for k in range(3):
            lines.append(json.dumps({"reviewerID": f"A{u}", "asin": f"B{(u + k) % 4}", "unixReviewTime": 1400 + k,
                                     "overall": float(1 + (u + k) % 5), "reviewText": "Good &amp; cheap"}))
    for line_no, text in sorted((bad or {}).items()):
        lines.insert(line_no - 1, text)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


AMAZON = dict(user_col="reviewerID", item_col="asin", time_col="unixReviewTime", rating_col="overall")


def test_gzipped_reviews_with_python_literal_metadata(tmp_path):
    reviews = tmp_path / "reviews_Books_5.json.gz"
    write_reviews(reviews)
    meta = tmp_path / "meta_Books.json.gz"
    records = [{"asin": f"B{i}", "title": f"Book {i} &amp; Co", "categories": [["Books", "Cooking"], ["Kindle"]],
                "price": 9.99, "salesRank": {"Books": 10 + i}} for i in range(4)]
    records[2]["title"] = "Salt 'n' Pepper"  # its repr uses double quotes; the others single quotes
    del records[3]["title"]  # a record without a title keeps the item, with no title
    meta.write_bytes(gzip.compress("".join(repr(r) + "\n" for r in records).encode()))
    assert "'asin': 'B0'" in gzip.decompress(meta.read_bytes()).decode()  # really not JSON
    ds = load_dataset(DatasetOptions(dataset=str(reviews), item_file=str(meta), **AMAZON))
    assert ds.name == "reviews_Books_5"
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (6, 4, 18)
    cat = ds.catalogue
    assert set(cat.fields) == {"title", "categories"}  # text fields; the price and the salesRank mapping are not
    b0, b2, b3 = (cat.raw_ids.index(b) for b in ("B0", "B2", "B3"))
    assert cat.title(b0) == "Book 0 & Co" and cat.title(b2) == "Salt 'n' Pepper" and cat.title(b3) == ""
    assert cat.fields["categories"][b0] == "Books, Cooking, Kindle"
    assert ds.times[0].tolist() == [1400.0, 1401.0, 1402.0]
    # --min-rating reads the overall field
    assert load_dataset(DatasetOptions(dataset=str(reviews), min_rating=4, **AMAZON)).n_interactions == 6


def test_plain_jsonl_metadata_with_chosen_fields_also_for_a_csv_dataset(tmp_path):
    meta = tmp_path / "meta.jsonl"
    meta.write_text("\n".join(json.dumps({"asin": f"B{i}", "title": f"T&#39;{i}", "description": ["Part", str(i)],
                                          "brand": "X"}) for i in range(4)) + "\n")
    reviews = tmp_path / "reviews.jsonl"
    write_reviews(reviews)
    ds = load_dataset(DatasetOptions(dataset=str(reviews), item_file=str(meta), item_text_cols=["title", "description"],
                                     **AMAZON))
    b1 = ds.catalogue.raw_ids.index("B1")
    assert set(ds.catalogue.fields) == {"title", "description"}
    assert ds.catalogue.title(b1) == "T'1" and ds.catalogue.fields["description"][b1] == "Part, 1"
    log = tmp_path / "log.csv"
    log.write_text("user,asin\nann,B1\nann,B2\n")
    ds = load_dataset(DatasetOptions(dataset=str(log), user_col="user", item_col="asin", item_file=str(meta)))
    assert ds.catalogue.title(1) == "T'1" and set(ds.catalogue.fields) == {"title", "description", "brand"}
    with pytest.raises(TandemError, match=r"field 'id' \(from --item-id-col\) is in no record .*fields found: asin"):
        load_dataset(DatasetOptions(dataset=str(log), user_col="user", item_col="asin", item_file=str(meta),
                                    item_id_col="id", on_bad_lines="skip"))
    with pytest.raises(TandemError, match=r"field 'name' \(from --item-text-cols\) is in no record"):
        load_dataset(DatasetOptions(dataset=str(log), user_col="user", item_col="asin", item_file=str(meta),
                                    item_text_cols=["name"]))


def test_malformed_json_lines_error_or_are_skipped(tmp_path):
    reviews = tmp_path / "reviews.jsonl.gz"
    write_reviews(reviews, {3: '{"reviewerID": "A9", "asin": ', 7: "[1, 2]",
                            10: json.dumps({"reviewerID": "A8", "unixReviewTime": 1, "overall": 5.0})})
    with pytest.raises(TandemError, match=f"line 3 of {reviews} is not valid JSON .*--on-bad-lines skip"):
        load_dataset(DatasetOptions(dataset=str(reviews), **AMAZON))
    ds = load_dataset(DatasetOptions(dataset=str(reviews), on_bad_lines="skip", **AMAZON))
    assert ds.n_interactions == 18 and ds.n_users == 6
    assert ds.input_files[0].skipped == 3 and ds.input_files[0].skipped_lines == [3, 7, 10]
    with pytest.raises(TandemError, match=r"line 1 of .* has no 'user_id' field \(from --user-col; its fields: "
                                          r"reviewerID, asin"):
        load_dataset(DatasetOptions(dataset=str(reviews), item_col="asin"))
    bad_gz = tmp_path / "broken.jsonl.gz"
    bad_gz.write_text('{"a": 1}\n')
    with pytest.raises(TandemError, match="not a complete gzip file"):
        load_dataset(DatasetOptions(dataset=str(bad_gz), **AMAZON))


def test_implicit_zero_ratings_are_dropped_by_min_rating_1(tmp_path):
    """Exports that mark implicit feedback (a view, a click) with rating 0 beside explicit 1-5 stars."""
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n1,a,0\n1,b,4\n1,c,0\n2,a,5\n2,c,1\n3,b,0\n")
    base = dict(dataset=str(path), user_col="user", item_col="item", rating_col="rating")
    explicit = load_dataset(DatasetOptions(**base, min_rating=1))
    assert explicit.n_interactions == 3 and explicit.user_raw_ids == ["1", "2"]  # user 3 had only a 0
    assert load_dataset(DatasetOptions(**base)).n_interactions == 6  # without --min-rating every row counts


# --- property test: what Python's csv module writes, the reader reads back --------------------------------------

TOKENS = ["a", "Z", "7", " ", '"', "'", ",", ";", "\t", "|", "\\", "\n", "é", "ß", "ÿ", "&amp;", "&#39;", "&lt;",
          "&", "amp;"]
text = st.lists(st.sampled_from(TOKENS), max_size=6).map("".join)
ids = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=4).map("".join)
rows = st.lists(st.tuples(ids, ids, st.integers(0, 2**40), text), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, sep=st.sampled_from([",", ";", "\t", "|"]), quoting=st.sampled_from([csv.QUOTE_ALL,
                                                                                        csv.QUOTE_MINIMAL]),
       escape=st.booleans())
def test_csv_reader_reads_back_what_the_csv_module_wrote(tmp_path, rows, sep, quoting, escape):
    path = tmp_path / "table.csv"
    with path.open("w", encoding="latin-1", newline="") as f:
        writer = csv.writer(f, delimiter=sep, quoting=quoting, escapechar="\\" if escape else None,
                            doublequote=not escape)
        writer.writerow(["user", "item", "time", "title"])
        writer.writerows(rows)
    fmt = TextFormat(sep=sep, quotechar='"', escapechar="\\" if escape else None, encoding="latin-1")
    inter = readers.read_delimited(path, fmt, "user", "item", "time", None, [])
    assert inter["user"].tolist() == [r[0] for r in rows]
    assert inter["item"].tolist() == [r[1] for r in rows]
    assert inter["order"].tolist() == [r[2] for r in rows]
    items = readers.read_item_file(path, fmt, "item", ["title"], [])
    assert items["item"].tolist() == [r[1] for r in rows]
    assert items["title"].tolist() == [html.unescape(r[3]) for r in rows]
