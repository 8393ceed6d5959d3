from pathlib import Path

import pytest

from tandem.io import atomic_directory, atomic_output, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path: Path):
    path = tmp_path / "a" / "f.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary left behind


def test_atomic_output_failure_keeps_old_content(tmp_path: Path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert path.read_text().strip().startswith("{") and '"v": 1' in path.read_text()
    assert len(list(tmp_path.iterdir())) == 1


def test_atomic_directory_failure_leaves_nothing(tmp_path: Path):
    target = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "part").write_text("x")
        raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_replaces_existing(tmp_path: Path):
    target = tmp_path / "d"
    with atomic_directory(target) as tmp:
        (tmp / "one").write_text("1")
    with atomic_directory(target) as tmp:
        (tmp / "two").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["two"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_files_get_normal_permissions(tmp_path: Path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_output(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
