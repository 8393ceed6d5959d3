import warnings

import numpy as np
import pandas as pd
import pytest

from tandem.data.dataset import build_dataset, kcore
from tandem.data.options import DatasetOptions, load_dataset
from tandem.errors import TandemError
from tests.conftest import write_atomic


def test_atomic_folder_with_string_ids(tmp_path):
    seqs = [np.array([3, 1, 2]), np.array([2, 3, 1, 4])]
    folder = write_atomic(tmp_path / "toy", seqs, string_ids=True)
    ds = load_dataset(DatasetOptions(dataset=str(folder)))
    assert ds.n_users == 2 and ds.n_items == 4
    # raw ids it001..it004 sort to dense 1..4, so the dense sequences equal the written ones
    assert [s.tolist() for s in ds.sequences] == [[3, 1, 2], [2, 3, 1, 4]]
    assert ds.catalogue.raw_ids[1:] == ["it001", "it002", "it003", "it004"]
    assert ds.catalogue.title(2) == "Movie 2"
    assert "genre" in ds.catalogue.fields and "year" not in ds.catalogue.fields  # floats are not text


def test_csv_string_ids_time_order_and_ties(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,iid,ts\nbob,zz,5\nann,yy,2\nbob,xx,1\nann,xx,2\nann,zz,1\n")
    ds = load_dataset(DatasetOptions(dataset=str(path), user_col="uid", item_col="iid", time_col="ts"))
    assert ds.user_raw_ids == ["ann", "bob"]
    raw = ds.catalogue.raw_ids
    # ann: zz@1, then yy and xx tied at 2 keep file order (yy first)
    assert [raw[i] for i in ds.sequences[0]] == ["zz", "yy", "xx"]
    assert [raw[i] for i in ds.sequences[1]] == ["xx", "zz"]
    assert ds.times[0].tolist() == [1.0, 2.0, 2.0]
    by_item = load_dataset(DatasetOptions(dataset=str(path), user_col="uid", item_col="iid", time_col="ts",
                                          tie_order="item"))
    assert [raw[i] for i in by_item.sequences[0]] == ["zz", "xx", "yy"]  # the tie sorted by raw id: xx < yy
    assert by_item.sequences[1].tolist() == ds.sequences[1].tolist()  # no tie, no change
    assert by_item.fingerprint() != ds.fingerprint()  # a checkpoint trained under one order refuses the other

    from tandem.data.stats import dataset_stats

    stats = dataset_stats(ds)  # 2 of 5 interactions share a timestamp; ann's test target is one of them
    assert stats["tied_interactions"] == 0.4 and stats["tied_test_targets"] == 0.5
    assert stats["tied_valid_targets"] == 0.0
    # float32 timestamps (RecBole's on ML-1M): 978300736 and 978300760 s are one 64-s step, so file order decides
    path.write_text("uid,iid,ts\nann,b,978300760\nann,a,978300736\nann,c,978300800\n")
    exact = load_dataset(DatasetOptions(dataset=str(path), user_col="uid", item_col="iid", time_col="ts"))
    rb = load_dataset(DatasetOptions(dataset=str(path), user_col="uid", item_col="iid", time_col="ts",
                                     tie_order="float32"))
    names = exact.catalogue.raw_ids
    assert [names[i] for i in exact.sequences[0]] == ["a", "b", "c"]
    assert [names[i] for i in rb.sequences[0]] == ["b", "a", "c"]
    # float32 after min-max scaling (RecBole's on ML-100K): over a 1000-s span the steps are far below a second, so
    # 501 and 503 s past the minimum stay apart, while raw float32 (8-s steps near 1e8 s) merges them
    path.write_text("uid,iid,ts\nann,b,100000503\nann,a,100000501\nbob,x,100000000\nbob,y,100001000\n")
    kw = dict(dataset=str(path), user_col="uid", item_col="iid", time_col="ts")
    raw32 = load_dataset(DatasetOptions(**kw, tie_order="float32"))
    minmax = load_dataset(DatasetOptions(**kw, tie_order="float32-minmax"))
    names = raw32.catalogue.raw_ids
    assert [names[i] for i in raw32.sequences[0]] == ["b", "a"]
    assert [names[i] for i in minmax.sequences[0]] == ["a", "b"]
    with pytest.raises(ValueError, match="tie_order must be"):
        build_dataset("x", pd.DataFrame({"user": ["a"], "item": ["b"], "order": [0]}), None, tie_order="time")


def test_latin1_tsv_without_timestamp_keeps_file_order(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_bytes("user\titem\n1\tcafé\n1\tnaïve\n2\tcafé\n".encode("latin-1"))
    items = tmp_path / "items.tsv"
    items.write_bytes("item\tname\ncafé\tLe Café\nnaïve\tNaïve Art\n".encode("latin-1"))
    opts = DatasetOptions(dataset=str(path), encoding="latin-1", user_col="user", item_col="item",
                          item_file=str(items), item_text_cols=["name"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(opts)
    assert any("keeping file order" in str(w.message) for w in caught)
    raw = ds.catalogue.raw_ids
    assert [raw[i] for i in ds.sequences[0]] == ["café", "naïve"]
    assert ds.catalogue.fields["name"][raw.index("naïve")] == "Naïve Art"


def test_wrong_encoding_is_a_user_error(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_bytes("user\titem\n1\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(TandemError, match="not valid utf-8.*--encoding latin-1"):
        load_dataset(DatasetOptions(dataset=str(path), user_col="user", item_col="item"))


def test_missing_column_names_found_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(TandemError, match=r"'movie'.*columns found: user, item"):
        load_dataset(DatasetOptions(dataset=str(path), user_col="user", item_col="movie"))


def test_min_rating_and_empty_after_filter(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u,i,r\n1,a,5\n1,b,2\n2,a,4\n")
    base = dict(dataset=str(path), user_col="u", item_col="i", rating_col="r")
    ds = load_dataset(DatasetOptions(**base, min_rating=4))
    assert ds.n_interactions == 2 and ds.n_items == 1
    with pytest.raises(TandemError, match="empty after filtering"):
        load_dataset(DatasetOptions(**base, min_rating=6))


def test_kcore_is_iterative():
    df = pd.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "x", "y", "z"]})
    # c and z have one interaction each; after removing them a and b keep x and y twice each
    out = kcore(df, 2)
    assert sorted(out["user"].unique()) == ["a", "b"] and sorted(out["item"].unique()) == ["x", "y"]
    assert len(kcore(df, 3)) == 0


def test_reindexing_is_deterministic():
    inter = pd.DataFrame({"user": ["2", "10", "2"], "item": ["b", "a", "c"], "order": [1, 1, 2]})
    a = build_dataset("t", inter, None)
    b = build_dataset("t", inter.iloc[::-1].reset_index(drop=True), None)
    assert a.user_raw_ids == ["2", "10"]  # numeric ids sort numerically
    assert a.catalogue.raw_ids == b.catalogue.raw_ids
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    assert a.fingerprint() == b.fingerprint()


def test_unknown_dataset_name():
    with pytest.raises(TandemError, match="unknown dataset 'ml-20m'.*known names are ml-100k, ml-1m"):
        load_dataset(DatasetOptions(dataset="ml-20m"))
