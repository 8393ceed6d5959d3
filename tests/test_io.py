import json
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


# --- interrupted writes: a real process killed with SIGKILL mid-write -----------------------------------------------
KILL_IN_DIRECTORY = r"""
import os, signal, sys
from pathlib import Path
import tandem.io as tio
target, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "two-moves":  # no one-step exchange: die between moving the old folder aside and moving the new one in
    tio._exchange = lambda a, b: False
    real = os.replace
    def replace(src, dst):
        real(src, dst)
        if str(dst).endswith(".old/x"):
            os.kill(os.getpid(), signal.SIGKILL)
    tio.os.replace = replace
with tio.atomic_directory(target) as tmp:
    (tmp / "weights").write_text("new")
    if mode == "while-writing":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed(code: str, *args: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr


def test_directory_killed_mid_write_keeps_the_old_folder(tmp_path: Path) -> None:
    from tandem.io import atomic_directory, recover_directory

    target = tmp_path / "srm"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("old")
    _killed(KILL_IN_DIRECTORY, target, "while-writing")
    assert (target / "weights").read_text() == "old"
    _killed(KILL_IN_DIRECTORY, target, "two-moves")
    assert not target.exists()  # the crash window of two moves: the old folder is aside...
    assert recover_directory(target) and (target / "weights").read_text() == "old"  # ...and comes back
    assert not list(tmp_path.glob(".srm.*.old"))
    with atomic_directory(target) as tmp:  # the next writer also recovers first, then replaces as usual
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"


KILL_IN_APPEND = r"""
import os, signal, sys
from tandem.io import JsonlAppender
with JsonlAppender(sys.argv[1]) as sink:
    sink.write({"id": 1})
    sink._fh.write('{"id": 2, "half')  # a record cut by the crash
    sink._fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_jsonl_append_killed_mid_line_is_repaired(tmp_path: Path) -> None:
    from tandem.io import JsonlAppender, read_jsonl, repair_jsonl

    log = tmp_path / "records.jsonl"
    _killed(KILL_IN_APPEND, log)
    assert log.read_text().endswith('"half') and read_jsonl(log) == [{"id": 1}]
    with JsonlAppender(log) as sink:  # resuming cuts the half line, then appends on a line of its own
        sink.write({"id": 2})
    assert read_jsonl(log) == [{"id": 1}, {"id": 2}] and log.read_text().count("\n") == 2
    log.write_text('{"id": 1}\n{"id": 2, "x\n')  # a newline but not JSON: cut too
    assert repair_jsonl(log) == len('{"id": 2, "x\n') and read_jsonl(log) == [{"id": 1}]
    log.write_text('{"id": 1}\nnot json\n{"id": 3}\n')  # damage before the last line is not a crash: an error
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(log)
