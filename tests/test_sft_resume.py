"""An interrupted SFT run resumes from its last trainer checkpoint, and refuses to resume under other settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cyclic_sequences, write_atomic

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def config(tmp_path: Path, data: Path, lr: float, epochs: int = 50) -> Path:
    """20 steps an epoch; 50 epochs run ~1000 steps (over 10 s), so the kill lands long before the end."""
    cfg = tmp_path / f"sft-{lr}.yaml"
    cfg.write_text(f"dataset: {data}\nepochs: {epochs}\nbatch_size: 2\nmax_items: 10\nwindow_stride: 5\n"
                   f"save_steps: 200\n"
                   f"learning_rate: {lr}\n"
                   f"model: {{hidden_size: 32, num_heads: 1, num_kv_heads: 1, num_layers: 1, intermediate_size: 32}}\n")
    return cfg


def sft(cfg: Path, out: Path, home: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llm_cloud.train.sft", "--config", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "TANDEM_HOME": str(home)}, **kw)


def test_interrupted_sft_resumes(tmp_path: Path) -> None:
    data = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=40, n_items=20, length=12))
    out, home = tmp_path / "ckpt", tmp_path / "home"
    scratch = tmp_path / ".ckpt.trainer"
    proc = sft(config(tmp_path, data, 0.001), out, home)
    deadline = time.time() + 240
    while not any(scratch.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(0.3)  # let the checkpoint folder finish
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and any(scratch.glob("checkpoint-*"))

    changed = sft(config(tmp_path, data, 0.002), out, home)
    _, err = changed.communicate(timeout=300)
    assert changed.returncode == 2 and "learning_rate: 0.001 -> 0.002" in err and "--overwrite" in err, err[-2000:]

    again = sft(config(tmp_path, data, 0.001), out, home)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "resuming from" in err, err[-3000:]
    meta = json.loads((out / "tandem_llm.json").read_text())
    steps_per_epoch = -(-meta["n_train_windows"] // 2)
    assert meta["resumed_from"].startswith("checkpoint-") and meta["train_steps"] == 50 * steps_per_epoch
    assert not scratch.exists()  # removed after success


@pytest.mark.torchrun
def test_sft_runs_as_two_processes(tmp_path: Path) -> None:
    """The same script under a 2-process launcher (torchrun's environment, as `accelerate launch` sets it on GPUs):
    on CPU the processes form a gloo group, each takes half of every epoch, and only rank 0 writes the checkpoint."""
    data = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=40, n_items=20, length=12))
    cfg = config(tmp_path, data, 0.001, epochs=1)
    out = tmp_path / "ckpt"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "llm_cloud.train.sft", "--config", str(cfg),
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**ENV, "TANDEM_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "tandem_llm.json").read_text())
    assert meta["train_steps"] == -(-meta["n_train_windows"] // (2 * 2))  # batch 2 per process, 2 processes
    assert proc.stderr.count("wrote ") == 1 and not (tmp_path / ".ckpt.trainer").exists()


def test_resume_skips_and_deletes_a_checkpoint_cut_short(tmp_path, capsys) -> None:
    """A run killed while the Trainer wrote a checkpoint leaves a folder without a readable trainer_state.json (the
    file the Trainer writes last); resuming takes the newest complete checkpoint and deletes the broken ones."""
    import json

    from llm_common.sft_run import last_checkpoint

    assert last_checkpoint(tmp_path / "nothing-yet") is None
    for step, state in ((3, json.dumps({"global_step": 3})), (6, None), (9, '{"global_st')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]
    assert "cut short" in capsys.readouterr().err
