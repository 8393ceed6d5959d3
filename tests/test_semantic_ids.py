"""Semantic IDs (TIGER, arXiv 2305.05065; CoFiRec, arXiv 2511.22707): quantisers, the trailing level, collision and
usage numbers, the real MiniLM encoder and its cache, and ``tandem sids build`` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_cloud.semantic_ids import embed
from llm_cloud.semantic_ids.cofi import cofi_codes, detect_fields
from llm_cloud.semantic_ids.disambiguate import collision_stats, disambiguate, trailing_level
from llm_cloud.semantic_ids.report import codebook_usage
from llm_cloud.semantic_ids.rq_kmeans import kmeans_codes, rq_kmeans
from llm_cloud.semantic_ids.rq_vae import train_rq_vae
from tandem.data.dataset import Catalogue
from tandem.errors import TandemError
from tests.conftest import cyclic_sequences, write_atomic

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def tandem(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines", *args], capture_output=True, text=True,
                          env={**ENV, "TANDEM_HOME": str(home)}, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("tandem: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def clustered(n_per: int = 50, k: int = 4, d: int = 8, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5  # (k, d)
    labels = np.repeat(np.arange(k), n_per)  # (n,)
    return centres[labels] + rng.normal(size=(len(labels), d)) * noise, labels  # (n, d), (n,)


def test_rq_kmeans_recovers_clusters_and_error_falls():
    x, labels = clustered()
    fit = rq_kmeans(x, levels=3, codebook_size=4, seed=0)
    assert fit.codes.shape == (200, 3)
    pairs = set(zip(labels.tolist(), fit.codes[:, 0].tolist()))
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4  # level 1 is a bijection with the true clusters
    total = float((x ** 2).sum(1).mean())
    mse = [total, *fit.residual_mse]
    assert all(a > b for a, b in zip(mse, mse[1:])), mse
    assert np.allclose(((x - fit.reconstruct()) ** 2).sum(1).mean(), fit.residual_mse[-1])


def test_kmeans_with_fewer_distinct_points_than_codes():
    labels, centroids = kmeans_codes(np.ones((5, 3)), codebook_size=4, seed=0)
    assert labels.tolist() == [0] * 5 and centroids.shape == (1, 3)
    labels, _ = kmeans_codes(np.repeat(np.eye(2), 3, axis=0), codebook_size=8, seed=0)
    assert len(set(labels.tolist())) == 2


def test_collision_numbers_and_trailing_level_by_hand():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 4]])
    before = collision_stats(codes)
    # 5 items, 3 distinct codes: rate 1 - 3/5; items 0, 1 and 3 share (0, 1)
    assert before == {"n_items": 5, "n_distinct": 3, "collision_rate": pytest.approx(0.4),
                      "colliding_items": pytest.approx(0.6), "max_group": 3}
    assert trailing_level(codes).tolist() == [0, 1, 0, 2, 0]
    full = disambiguate(codes)
    assert full.shape == (5, 3) and len({tuple(r) for r in full.tolist()}) == 5
    after = collision_stats(full)
    assert after["collision_rate"] == 0 and after["max_group"] == 1


def test_disambiguation_on_random_codes():
    codes = np.random.default_rng(1).integers(0, 3, size=(300, 2))  # 9 possible codes: many collisions
    full = disambiguate(codes)
    assert len(np.unique(full, axis=0)) == 300
    unique_rows = np.array([(codes == r).all(1).sum() == 1 for r in codes])
    assert (full[unique_rows, -1] == 0).all()
    assert (full[:, :2] == codes).all()


def test_codebook_usage_and_perplexity():
    u = codebook_usage(np.array([0, 0, 1, 1]), 4)
    assert u["used"] == 2 and u["usage"] == 0.5 and u["perplexity"] == pytest.approx(2.0)
    assert codebook_usage(np.zeros(7, dtype=int), 4)["perplexity"] == pytest.approx(1.0)


def test_rq_vae_trains_and_loss_falls():
    x, _ = clustered(n_per=64, d=16, noise=0.3)
    fit = train_rq_vae(x.astype(np.float32), levels=2, codebook_size=8, steps=150, batch_size=64, hidden=32,
                       latent_dim=8, seed=0)
    assert fit.codes.shape == (256, 2) and fit.codes.min() >= 0 and fit.codes.max() < 8
    assert np.mean(fit.losses[-10:]) < 0.2 * np.mean(fit.losses[:5]), fit.losses[::10]


def test_minilm_embeds_real_text():
    emb = embed.embed_texts(["a cat sits on the mat", "a kitten sits on a rug", "the stock market fell sharply"])
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    sim = emb @ emb.T  # (3, 3) cosine
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


def test_embedding_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    calls = []
    real = embed.embed_texts
    monkeypatch.setattr(embed, "embed_texts", lambda texts: calls.append(list(texts)) or real(texts))
    cat = Catalogue(raw_ids=["", "a", "b", "c"], title_field="title",
                    fields={"title": ["", "Heat", "Alien", "Heat"], "genre": ["", "Crime", "", "Crime"]})
    first = embed.item_embeddings("toy", cat)
    assert first.shape == (3, 384) and sorted(calls[0]) == ["Alien", "Heat | Crime"] and len(calls) == 1
    assert np.array_equal(first[0], first[2])  # equal texts are embedded once
    assert len(list((tmp_path / "embeddings" / "toy").glob("all-*.npy"))) == 1
    again = embed.item_embeddings("toy", cat)
    assert len(calls) == 1 and np.array_equal(first, again)
    embed.item_embeddings("toy", cat, ["genre"], empty="unknown")  # another field set: embedded once more
    assert sorted(calls[-1]) == ["Crime", "unknown"]


def test_cofi_field_detection():
    ml = Catalogue(raw_ids=["", "1"], fields={"movie_title": ["", "Toy Story"], "release_year": ["", "1995"],
                                              "class": ["", "Animation"]}, title_field="movie_title")
    assert detect_fields(ml) == (["class"], ["movie_title"])
    assert detect_fields(ml, ["release_year"], None) == (["release_year"], ["movie_title"])
    bare = Catalogue(raw_ids=["", "1"], fields={"title": ["", "x"]}, title_field="title")
    with pytest.raises(TandemError, match="--category-fields"):
        detect_fields(bare)
    with pytest.raises(TandemError, match="lacks"):
        detect_fields(ml, ["genre"])


def test_cofi_levels_follow_their_own_spaces():
    coarse = np.repeat(np.eye(2), 4, axis=0)  # (8, 2): two categories
    fine = np.tile(np.eye(4), (2, 1))  # (8, 4): four titles, repeated in both categories
    codes = cofi_codes([coarse, fine], codebook_size=4, seed=0)
    assert len(set(codes[:, 0].tolist())) == 2 and len(set(codes[:, 1].tolist())) == 4
    assert len(np.unique(codes, axis=0)) == 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_atomic(tmp_path_factory.mktemp("sids") / "cyc", cyclic_sequences(n_users=30, n_items=20, length=12))


def _check_output(out: Path, shape: tuple[int, int]) -> dict:
    codes = np.load(out / "codes.npy")
    assert codes.shape == shape and (codes[0] == -1).all()
    assert len(np.unique(codes[1:], axis=0)) == shape[0] - 1 and codes[1:].min() >= 0
    report = json.loads((out / "report.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert report["collision_rate_after"] == 0 and report["build_seconds"] > 0
    assert config["n_items"] == 20 and len(config["data_fingerprint"]) == 16
    return {"report": report, "config": config}


def test_cli_rq_build(tiny, tmp_path):
    out = tmp_path / "sids"
    proc = tandem("sids", "build", "--dataset", str(tiny), "--out", str(out), "--levels", "2", "--codebook-size", "4",
                  home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    res = _check_output(out, (21, 3))
    assert [lv["used"] <= 4 for lv in res["report"]["levels"]] == [True, True]
    assert res["config"]["mode"] == "rq" and "collisions:" in proc.stdout
    assert list((tmp_path / "home" / "embeddings" / "cyc").glob("all-*.npy"))


def test_cli_cofi_build_and_errors(tiny, tmp_path):
    from pipelines.train_srm import train_srm
    from srm_device.models import default_config
    from srm_device.training.config import TrainConfig
    from tandem.data.options import DatasetOptions, load_dataset

    opts = DatasetOptions(dataset=str(tiny))
    srm = tmp_path / "srm"
    cfg = default_config("sasrec", hidden_size=16, inner_size=32, max_len=10)
    train_srm(load_dataset(opts), opts, "sasrec", cfg, TrainConfig(epochs=1, threads=1), srm, progress=False)
    out = tmp_path / "cofi"
    proc = tandem("sids", "build", "--dataset", str(tiny), "--mode", "cofi", "--srm", str(srm), "--codebook-size",
                  "4", "--out", str(out), home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    res = _check_output(out, (21, 4))
    assert res["config"]["category_fields"] == ["genre"] and res["config"]["title_fields"] == ["title"]
    assert res["report"]["levels"][0]["used"] == 1  # every tiny item has the genre "Drama Comedy"

    other = write_atomic(tmp_path / "other", cyclic_sequences(n_users=30, n_items=20, length=12, seed=5))
    assert_user_error(tandem("sids", "build", "--dataset", str(other), "--mode", "cofi", "--srm", str(srm),
                             "--out", str(tmp_path / "x"), home=tmp_path / "home"), "trained on other data", "--srm")


def test_cli_user_errors(tiny, tmp_path):
    home = tmp_path / "home"
    assert_user_error(tandem("sids", "build", "--dataset", str(tiny), "--mode", "cofi", "--out", str(tmp_path / "o"),
                             home=home), "--mode cofi", "--srm")
    assert_user_error(tandem("sids", "build", "--dataset", str(tiny), "--codebook-size", "1", "--out",
                             str(tmp_path / "o"), home=home), "--codebook-size must be >= 2")
    assert not (tmp_path / "o").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    assert_user_error(tandem("sids", "build", "--dataset", str(tiny), "--out", str(tmp_path / "busy"), home=home),
                      "does not hold semantic IDs", "new or empty folder")
    assert (tmp_path / "busy" / "notes.txt").exists()
    proc = tandem("sids", "build", "--help", home=home)
    assert proc.returncode == 0 and "usage: tandem sids build" in proc.stdout and "--mode" in proc.stdout


def test_build_with_rq_vae(tiny, tmp_path, monkeypatch):
    from llm_cloud.semantic_ids.build import build_semantic_ids
    from tandem.data.options import DatasetOptions

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    codes, report = build_semantic_ids(DatasetOptions(dataset=str(tiny)), method="vae", levels=2, codebook_size=4,
                                       vae_steps=20)
    assert codes.shape == (21, 3) and len(np.unique(codes[1:], axis=0)) == 20
    assert report["collision_rate_after"] == 0 and report["config"]["method"] == "vae"
