"""Parameter generator (DUET) and Persona codebook."""

import numpy as np
import pytest
import torch

from llm_cloud.paramgen.checkpoint import load_paramgen
from llm_cloud.paramgen.config import ParamGenConfig
from llm_cloud.paramgen.model import ParamGenerator
from llm_cloud.paramgen.prototypes import encode, fit_codebook
from llm_cloud.paramgen.trainer import Positions, fit, generated_user
from pipelines.train_paramgen import train_paramgen
from pipelines.train_srm import train_srm
from srm_device.head import HeadParams, HeadShapeError, HeadSpec
from srm_device.models import default_config
from srm_device.scoring import recent_window
from srm_device.training.config import TrainConfig
from tandem.data.options import DatasetOptions, load_dataset


def shifted_positions(n: int, n_items: int, d: int, seed: int) -> tuple[Positions, torch.Tensor]:
    """Every user has the SAME static representation u; the target is item 1 if the user's recent items are even,
    item 2 if odd. A static head ranks one of them first for everyone, so it gets at most ~half right; the generated
    head can shift u per user."""
    g = torch.Generator().manual_seed(seed)
    item_emb = torch.randn(n_items + 1, d, generator=g)
    user = torch.randn(1, d, generator=g).repeat(n, 1)  # (n, d) identical
    odd = torch.rand(n, generator=g) < 0.5
    base = torch.randint(2, n_items // 2, (n, 5), generator=g) * 2  # even ids
    recent = torch.where(odd[:, None], base + 1, base)  # (n, 5) all odd or all even
    target = torch.where(odd, 2, 1)
    return Positions(user, recent, target), item_emb


def top1_accuracy(user, item_emb, target):
    scores = user @ item_emb[1:].T
    return float((scores.argmax(1) + 1 == target).float().mean())


def test_hypernetwork_learns_user_specific_shift(tmp_path):
    torch.manual_seed(0)
    train, item_emb = shifted_positions(2000, 40, 16, seed=1)
    valid, _ = shifted_positions(400, 40, 16, seed=2)
    valid.user = train.user[: len(valid.target)]
    cfg = ParamGenConfig(recent_k=5, rank=4, gru_size=32, z_size=32, dropout=0.0, epochs=8, patience=8,
                         batch_size=128, lr=3e-3)
    gen = ParamGenerator(40, HeadSpec(16, 4), cfg)
    assert torch.equal(generated_user(gen, valid.user, valid.recent), valid.user)  # starts as the static SRM

    def validate(g):
        return {"ndcg@10": top1_accuracy(generated_user(g, valid.user, valid.recent), item_emb, valid.target)}

    fit(gen, item_emb, train, validate, cfg, tmp_path / "pg", meta={}, progress=False)
    static = top1_accuracy(valid.user, item_emb, valid.target)
    with torch.no_grad():
        generated = top1_accuracy(generated_user(gen.eval(), valid.user, valid.recent), item_emb, valid.target)
    assert static < 0.6
    assert generated > 0.95
    with torch.no_grad():  # the low-rank factors learned too, not only the bias (zero A and B would never move)
        a, b, _ = gen.split(gen(valid.recent))
    assert float((a.norm(dim=(1, 2)) * b.norm(dim=(1, 2))).mean()) > 1e-3


def test_head_params_reject_wrong_shape_and_nan():
    spec = HeadSpec(8, 2)
    ok = HeadParams.unflatten(np.zeros(spec.n_params), spec)
    assert ok.a.shape == (8, 2) and ok.bias.shape == (8,)
    with pytest.raises(HeadShapeError, match="needs 40"):
        HeadParams.unflatten(np.zeros(spec.n_params + 1), spec)
    with pytest.raises(HeadShapeError, match="'a' has shape"):
        HeadParams(torch.zeros(8, 3), torch.zeros(8, 2), torch.zeros(8)).check(spec)
    bad = np.zeros(spec.n_params)
    bad[0] = np.nan
    with pytest.raises(HeadShapeError, match="non-finite"):
        HeadParams.unflatten(bad, spec)


def test_codebook_round_trip_and_bytes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 1088)).astype(np.float32)
    params = centers[rng.integers(0, 4, 500)] + 0.01 * rng.normal(size=(500, 1088)).astype(np.float32)
    book = fit_codebook(params, n_prototypes=4, edit_dim=8)
    ids, coefs = encode(book, params)
    recon = book.decode(ids, coefs)
    rel = np.linalg.norm(recon - params, axis=1) / np.linalg.norm(params, axis=1)
    assert rel.mean() < 0.02
    spec = HeadSpec(64, 8)
    assert spec.n_params == 1088
    assert book.update_bytes() == 2 + 2 * 8 <= 0.10 * 4 * spec.full_params
    with pytest.raises(ValueError, match="out of range"):
        book.decode(np.array([7]), coefs[:1])


def test_recent_window_left_pads():
    assert recent_window(np.array([5, 6]), 4) == [0, 0, 5, 6]
    assert recent_window(np.array([1, 2, 3, 4, 5]), 3) == [3, 4, 5]


def test_train_paramgen_end_to_end(tmp_path, atomic_dataset):
    opts = DatasetOptions(dataset=str(atomic_dataset))
    ds = load_dataset(opts)
    train_srm(ds, opts, "sasrec", default_config("sasrec", hidden_size=16, inner_size=32, max_len=10),
              TrainConfig(epochs=2), tmp_path / "srm", progress=False)
    cfg = ParamGenConfig(recent_k=5, rank=2, gru_size=16, z_size=16, epochs=2, n_prototypes=4, edit_dim=3)
    report = train_paramgen(tmp_path / "srm", tmp_path / "pg", cfg, progress=False)
    assert set(report["test"]) == {"static", "generated", "persona"}
    b = report["bytes_per_update"]
    assert b["prototype_edit"] == 2 + 2 * 3 and b["full_head"] == 4 * (16 * 16 + 16)
    gen, book, meta = load_paramgen(tmp_path / "pg")
    assert book.n_prototypes == 4 and meta["rank"] == 2
    again = train_paramgen(tmp_path / "srm", tmp_path / "pg", cfg, progress=False)
    assert again["epochs_run"] == 2  # finished runs are not retrained
