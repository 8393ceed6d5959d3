"""Faults on real processes: `tandem build` killed with SIGKILL in the LLM, the SRM and the candidate cache resumes to
the weights of an uninterrupted build; a truncated weights file is refused by `tandem serve` (exit 2, one line) and
rebuilt by `tandem build`; an unreadable candidate-cache shard is deleted and its lists come back the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_build import tiny_config

BIN = Path(sys.executable).parent
ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
# (stage, what shows the stage is under way): the LLM trainer's periodic checkpoint, the SRM's epoch state, the LLM
# candidate lists cached for the collaborative SRM
KILL_POINTS = (
    ("llm", lambda store: any(store.glob(".llm.trainer/checkpoint-*/trainer_state.json"))),
    ("srm", lambda store: (store / "srm" / "state" / "trainer_state.json").is_file()),
    ("collab", lambda store: any((store / "collab" / "candidates").glob("shard-*.npz"))),
)


def build_cmd(config: Path, out: Path) -> list[str]:
    return [str(BIN / "tandem"), "build", "--config", str(config), "--out", str(out)]


def stages(out: Path) -> dict:
    manifest = out / "manifest.json"
    return json.loads(manifest.read_text())["stages"] if manifest.is_file() else {}


def weights(out: Path) -> dict[str, str]:
    return {stage: entry["weights"] for stage, entry in stages(out).items()}


def processes_touching(path: Path) -> list[int]:
    """Live processes whose command line names ``path`` (an orphaned LLM trainer would)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmd and "pytest" not in cmd:
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    cfg = tiny_config(tmp, parallel=False, llm_epochs=6, srm_epochs=12, srm_patience=12,
                      collab=dict(epochs=12, prefixes_per_user=1))
    sft = Path(cfg.llm_config)
    sft.write_text(sft.read_text() + "save_steps: 3\n")  # a trainer checkpoint every 3 steps: something to resume
    config = tmp / "build.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**ENV, "TANDEM_HOME": str(tmp / "home")}
    ref = subprocess.run(build_cmd(config, tmp / "reference"), env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    return tmp, config, env


def test_killed_build_resumes_to_the_weights_of_an_uninterrupted_one(setup) -> None:
    tmp, config, env = setup
    out = tmp / "killed"
    for stage, under_way in KILL_POINTS:
        proc = subprocess.Popen(build_cmd(config, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 600
        while not under_way(out):
            assert proc.poll() is None, f"the build ended before {stage} was under way: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"{stage} never started"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the build process only, as an out-of-memory kill would
        proc.wait(30)
        proc.stderr.close()
        assert stage not in stages(out), f"killed too late: {stage} had finished"
        if stage == "srm":  # this run finished the LLM killed in the run before: from its trainer checkpoint
            assert "resuming from" in (out / "logs" / "llm.log").read_text()
        deadline = time.monotonic() + 10
        while processes_touching(out):  # the LLM trainer dies with the build instead of writing on
            assert time.monotonic() < deadline, f"orphans left writing into {out}: {processes_touching(out)}"
            time.sleep(0.1)
    rerun = subprocess.run(build_cmd(config, out), env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    expected = weights(tmp / "reference")
    assert set(expected) == {"sids", "llm", "srm", "paramgen", "collab", "thresholds"}
    assert weights(out) == expected


def test_truncated_weights_are_refused_by_serve_and_rebuilt_by_build(setup) -> None:
    tmp, config, env = setup
    store = tmp / "reference"
    before = weights(store)
    target = store / "srm" / "model.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    serve = subprocess.run([str(BIN / "tandem"), "serve", "--artifacts", str(store), "--port", "0"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert serve.returncode == 2, serve.stderr[-2000:]
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1 and "stage 'srm'" in lines[0] and f"tandem build --out {store}" in lines[0], lines
    rebuild = subprocess.run(build_cmd(config, store), env=env, capture_output=True, text=True, timeout=900)
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    assert target.read_bytes() == data and weights(store) == before
    ran = {line.split()[0] for line in rebuild.stdout.splitlines() if line.strip()}
    assert "srm" in ran


def test_unreadable_candidate_shard_is_deleted_and_its_lists_come_back(setup) -> None:
    import numpy as np

    from llm_cloud.backends import load_backend
    from pipelines.candidate_cache import CandidateCache, LocalEngine

    tmp, config, env = setup
    store = tmp / "reference"
    folder = store / "collab" / "candidates"
    shards = sorted(folder.glob("shard-*.npz"))
    assert shards
    with np.load(shards[0]) as z:
        n = z["ids"].shape[1]
    backend = load_backend("transformers", store / "llm")
    histories = [np.array([1, 2, 3]), np.array([4, 5])]
    before = CandidateCache(folder).lists(LocalEngine(backend), histories, n)
    new = sorted(set(folder.glob("shard-*.npz")) - set(shards))
    assert new, "the two lists should have been generated and cached"
    new[0].write_bytes(b"PK\x03\x04 not a zip any more")
    rebuild = subprocess.run(build_cmd(config, store), env=env, capture_output=True, text=True, timeout=900)
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    assert "deleted 1 unreadable candidate-cache shard" in rebuild.stderr and not new[0].exists()
    cache = CandidateCache(folder)
    again = cache.lists(LocalEngine(backend), histories, n)
    assert cache.misses == 2 and np.array_equal(again[0], before[0]) and np.allclose(again[1], before[1])
    bad = folder / "shard-0000.npz"  # a bad shard met by a reader, not by the build's check: deleted, no error
    bad.write_bytes(b"garbage")
    cache = CandidateCache(folder)
    assert np.array_equal(cache.lists(LocalEngine(backend), histories, n)[0], before[0]) and cache.hits == 2
    assert not bad.exists()
