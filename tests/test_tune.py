"""`tandem tune srm` on real ML-100K: a 3-trial Optuna study, killed in its second trial and resumed, saves the best
settings and a checkpoint that `tandem eval srm` reads; bad search spaces exit 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
SPACE = """model: sasrec
fixed: {epochs: 3, patience: 3, threads: 1, max_len: 20, n_layers: 1}
params:
  lr: {float: [1.0e-3, 3.0e-3], log: true}
  hidden_size: {choice: [16, 32]}
"""


def _tandem(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", *args]


def _trials(out: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="tandem-tune-srm", storage=storage).get_trials(deepcopy=False)


def test_tune_three_trials_survives_a_kill_and_saves_the_best(tmp_path: Path) -> None:
    import optuna

    space, out = tmp_path / "space.yaml", tmp_path / "study"
    space.write_text(SPACE)
    cmd = _tandem("tune", "srm", "--space", str(space), "--out", str(out), "--trials", "3", "--quiet")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # wait until trial 0 is done and trial 1 is training
            time.sleep(0.5)
            if (out / "study.journal").exists():
                states = [t.state for t in _trials(out)]
                if states.count(optuna.trial.TrialState.COMPLETE) == 1 and states[-1].name == "RUNNING":
                    break
            assert proc.poll() is None, proc.stderr.read()
        else:
            pytest.fail("the study never reached its second trial")
        time.sleep(2)  # into the second trial's training
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = [t for t in _trials(out) if t.state.name == "RUNNING"]
    assert len(killed) == 1 and (out / "best.yaml").exists()  # written after trial 0

    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = _trials(out)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and trials[killed[0].number].state.name == "FAIL"
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == killed[0].number)
    assert retry.params == killed[0].params and retry.state.name == "COMPLETE"
    assert retry.user_attrs["checkpoint"] == killed[0].user_attrs["checkpoint"]  # resumed the same folder

    import yaml

    best = yaml.safe_load((out / "best.yaml").read_text())
    top = max(complete, key=lambda t: t.value)
    assert best["trial"] == top.number and best["valid_ndcg@10"] == pytest.approx(top.value)
    assert best["trials_complete"] == 3 and best["model_config"]["max_len"] == 20
    assert (out / "trials.png").stat().st_size > 1000
    report = tmp_path / "best.json"
    ev = subprocess.run(_tandem("eval", "srm", "--checkpoint", str(out / "best"), "--split", "valid", "--json",
                                str(report)), env=ENV, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(report.read_text())["metrics"]["ndcg@10"] == pytest.approx(best["valid_ndcg@10"], abs=1e-6)


@pytest.mark.parametrize("text, fragment", [
    ("params: {lr: {float: [0.1, 0.01]}}\n", "[lo, hi] with lo < hi"),
    ("params: {learning_rate: {float: [0.001, 0.01]}}\n", "'learning_rate' is not an SRM or training setting"),
    ("model: bert4rec\nparams: {lr: {float: [0.001, 0.01]}}\n", "model 'bert4rec' is not one of sasrec, gru4rec"),
    ("params: {lr: {uniform: [0.001, 0.01]}}\n", "must have exactly one of float"),
    ("fixed: {lr: 0.001}\nparams: {lr: {float: [0.001, 0.01]}}\n", "'lr' is both fixed and searched"),
])
def test_bad_search_space_exits_2(tmp_path: Path, text: str, fragment: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    proc = subprocess.run(_tandem("tune", "srm", "--space", str(space), "--out", str(tmp_path / "o")), env=ENV,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tandem: error")]
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize("name", ["tune_sasrec", "tune_gru4rec"])
def test_packaged_spaces_load_and_build_valid_configs(name: str) -> None:
    from pipelines import configs
    from pipelines.tune_srm import load_space, trial_configs

    space = load_space(configs.resolve(name, prefix="tune_", flag="--space"))
    lows = {k: (v["choice"][0] if "choice" in v else v.get("float", v.get("int"))[0]) for k, v in space.params.items()}
    model_cfg, train_cfg = trial_configs(space, lows)
    assert space.model == name.split("_")[1] and train_cfg.epochs == space.fixed["epochs"]
    assert all(getattr(model_cfg, k, getattr(train_cfg, k, None)) == v for k, v in lows.items())
