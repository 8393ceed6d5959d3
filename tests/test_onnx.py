"""ONNX export of the device rerank step: parity with torch, the static fallback, bad files, and the CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from srm_device.head import HeadParams, HeadSpec
from srm_device.models import build_model, default_config
from srm_device.onnx_export import export_onnx
from srm_device.onnx_runtime import OnnxReranker
from srm_device.scoring import rerank_scores, score_history
from tandem.errors import TandemError
from tests.conftest import cyclic_sequences, write_atomic

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
N_ITEMS, MAX_LEN, RANK = 40, 8, 4
HISTORY_LENGTHS = (1, 5, 13)  # 13 > MAX_LEN: the runtime keeps the last MAX_LEN items
CANDIDATE_COUNTS = (7, 100)


def tandem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def random_head(d: int, r: int, seed: int) -> HeadParams:
    gen = torch.Generator().manual_seed(seed)
    return HeadParams(0.3 * torch.randn(d, r, generator=gen), 0.3 * torch.randn(d, r, generator=gen),
                      0.3 * torch.randn(d, generator=gen))


@pytest.fixture(scope="module", params=["sasrec", "gru4rec"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    cfg = default_config(request.param, hidden_size=32, inner_size=64, max_len=MAX_LEN)
    model = build_model(request.param, N_ITEMS, cfg).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx", rank=RANK)
    return model, OnnxReranker(path)


def test_metadata(exported):
    model, rr = exported
    assert rr.meta == {"format": "tandem-rerank", "format_version": 1, "model": model.name, "hidden_size": 32,
                       "rank": RANK, "max_len": MAX_LEN, "n_items": N_ITEMS}


def test_parity_with_random_head(exported):
    model, rr = exported
    rng = np.random.default_rng(1)
    for i, t in enumerate(HISTORY_LENGTHS):
        for c in CANDIDATE_COUNTS:
            history = rng.integers(1, N_ITEMS + 1, size=t)
            candidates = rng.integers(1, N_ITEMS + 1, size=c)
            head = random_head(32, RANK, seed=i)
            got = rr.scores(history, candidates, head)
            want = score_history(model, history, candidates, head)
            assert got.shape == (c,) and got.dtype == np.float32
            assert np.abs(got - want).max() <= 1e-5, (t, c)
            static = score_history(model, history, candidates, None)
            assert np.abs(want - static).max() > 1e-3  # the head really changes the scores


def test_zero_head_is_static_srm(exported):
    model, rr = exported
    rng = np.random.default_rng(2)
    for t in HISTORY_LENGTHS:
        history = rng.integers(1, N_ITEMS + 1, size=t)
        candidates = rng.integers(1, N_ITEMS + 1, size=CANDIDATE_COUNTS[0])
        kept = torch.from_numpy(history[-MAX_LEN:])[None]  # (1, min(t, MAX_LEN))
        with torch.no_grad():
            static = rerank_scores(model, kept, torch.tensor([kept.shape[1]]),
                                            torch.from_numpy(candidates)[None])[0].numpy()  # (c,)
        zeros = HeadSpec(32, RANK).zeros()
        np.testing.assert_allclose(score_history(model, history, candidates, None), static, atol=1e-6)
        np.testing.assert_allclose(score_history(model, history, candidates, zeros), static, atol=1e-6)
        np.testing.assert_allclose(rr.scores(history, candidates, None), static, atol=1e-5)
        np.testing.assert_allclose(rr.scores(history, candidates, zeros), static, atol=1e-5)


def test_wrong_head_shape_is_rejected(exported):
    _, rr = exported
    with pytest.raises(ValueError, match="shape"):
        rr.scores(np.array([1, 2]), np.array([3, 4]), random_head(32, RANK + 1, seed=0))


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(TandemError, match="not a readable ONNX model.*tandem export onnx") as info:
        OnnxReranker(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TandemError, match="does not exist.*tandem export onnx"):
        OnnxReranker(tmp_path / "missing.onnx")


def test_cli_export(tmp_path):
    from pipelines.train_srm import train_srm
    from srm_device.training.config import TrainConfig
    from tandem.data.options import DatasetOptions, load_dataset

    folder = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=30, n_items=20, length=12))
    opts = DatasetOptions(dataset=str(folder))
    train_srm(load_dataset(opts), opts, "sasrec", default_config("sasrec", hidden_size=16, inner_size=32, max_len=10),
              TrainConfig(epochs=1), tmp_path / "ck", progress=False)
    out = tmp_path / "dev" / "srm.onnx"
    proc = tandem("export", "onnx", "--srm", str(tmp_path / "ck"), "--out", str(out), "--rank", "3")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "Traceback" not in proc.stderr
    rr = OnnxReranker(out)
    assert (rr.meta["model"], rr.meta["rank"], rr.meta["max_len"], rr.meta["n_items"]) == ("sasrec", 3, 10, 20)
    assert rr.scores(np.array([1, 2, 3]), np.arange(1, 21), None).shape == (20,)
    layers = tmp_path / "dev" / "layers.onnx"
    proc = tandem("export", "onnx", "--srm", str(tmp_path / "ck"), "--out", str(layers), "--edit", "layers")
    assert proc.returncode == 0 and "layers edit rank 8" in proc.stdout, proc.stderr
    spec = OnnxReranker(layers).layer_spec
    assert (spec.hidden_size, spec.inner_size, spec.rank, spec.layers) == (16, 32, 8, ("attn_out", "ffn_out"))


def test_cli_help_and_user_error(tmp_path, capsys):
    from pipelines.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["export", "onnx", "--help"])
    assert info.value.code == 0
    assert "usage: tandem export onnx" in capsys.readouterr().out
    assert main(["export", "onnx", "--srm", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tandem: error: checkpoint folder") and len(err.splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def exported_layers(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("sasrec", N_ITEMS, default_config("sasrec", hidden_size=32, inner_size=64,
                                                          max_len=MAX_LEN)).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "layers.onnx", rank=RANK, edit="layers")
    return model, OnnxReranker(path)


def test_layer_edits_match_the_duet_method(exported_layers):
    from srm_device.adaptation import make_method
    from srm_device.onnx_runtime import verify_export

    model, rr = exported_layers
    assert rr.edit == "layers" and rr.meta["format"] == "tandem-rerank-layers"
    duet = make_method("duet", model, rank=RANK)
    assert rr.layer_spec == duet.spec
    rng = np.random.default_rng(3)
    gen = torch.Generator().manual_seed(3)
    for t in HISTORY_LENGTHS:
        history = rng.integers(1, N_ITEMS + 1, size=t)
        candidates = rng.integers(1, N_ITEMS + 1, size=CANDIDATE_COUNTS[0])
        kept = [history[-MAX_LEN:].tolist()]
        edits = 0.3 * torch.randn(duet.spec.n_params, generator=gen)
        want = duet.scores(kept, edits[None])[0, torch.from_numpy(candidates)].numpy()
        static = score_history(model, history, candidates, None)
        assert np.abs(rr.scores(history, candidates, edits.numpy()) - want).max() <= 1e-5
        assert np.abs(want - static).max() > 1e-3  # the edits really change the scores
        assert np.abs(rr.scores(history, candidates, None) - static).max() <= 1e-5  # zero edits: static
    assert verify_export(model, rr) <= 1e-5
    with pytest.raises(ValueError, match="shape"):
        rr.scores(np.array([1, 2]), np.array([3, 4]), np.zeros(duet.spec.n_params - 1))
    with pytest.raises(ValueError, match="non-finite"):
        rr.scores(np.array([1, 2]), np.array([3, 4]), np.full(duet.spec.n_params, np.nan))


def test_layer_export_needs_a_transformer(tmp_path):
    gru = build_model("gru4rec", N_ITEMS, default_config("gru4rec", hidden_size=32, max_len=MAX_LEN))
    with pytest.raises(ValueError, match="transformer.*--edit head"):
        export_onnx(gru, tmp_path / "g.onnx", rank=RANK, edit="layers")
