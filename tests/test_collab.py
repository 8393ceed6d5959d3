"""LSC4Rec collaborative training (arXiv 2502.08667): the resumable candidate cache and its LLM guard, the in-list loss
(the target is always a class), fine-tuning that lifts the target inside the list, and `tandem train collab` end to
end on a tiny LLM and a tiny SASRec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm_cloud.backends import CandidateList
from pipelines.candidate_cache import CandidateCache, LocalEngine
from pipelines.cli.main import main
from srm_device.models import build_model, default_config
from srm_device.scoring import rerank_scores
from srm_device.training.collab import CollabExamples, collab_loss, finetune
from tandem.errors import TandemError
from tests.conftest import cyclic_sequences, write_atomic
from tests.test_generative import ENV, TINY, make, random_codes

N_ITEMS = 30


def fake_llm(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tandem_llm.json").write_text(json.dumps({"data_fingerprint": "abc"}))
    (folder / "model.safetensors").write_bytes(weights)
    np.save(folder / "codes.npy", np.arange(N_ITEMS + 1))
    return folder


class CountingBackend:
    """Deterministic lists from the history; counts the histories it was asked for; can fail after some calls."""

    def __init__(self, folder: Path, fail_after: int | None = None) -> None:
        self.artifact = SimpleNamespace(folder=folder, n_items=N_ITEMS)
        self.generated = 0
        self.calls = 0
        self.fail_after = fail_after

    def beam_candidates(self, histories, n):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # the run is killed
        self.calls += 1
        self.generated += len(histories)
        out = []
        for h in histories:
            items = (np.arange(n) + int(np.sum(h))) % N_ITEMS + 1
            out.append(CandidateList(items, -np.arange(n, dtype=np.float64)))
        return out


def test_cache_resumes_after_a_kill_and_generates_only_missing_rows(tmp_path: Path) -> None:
    llm = fake_llm(tmp_path / "llm", b"weights-1")
    hist = [np.arange(1, k + 2) for k in range(12)]
    folder = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        CandidateCache(folder).lists(LocalEngine(CountingBackend(llm, fail_after=2), chunk=3), hist, 5)
    assert len(list(folder.glob("shard-*.npz"))) == 2  # two finished chunks survive the kill
    backend = CountingBackend(llm)
    cache = CandidateCache(folder)
    ids, scores = cache.lists(LocalEngine(backend, chunk=3), hist, 5)
    assert backend.generated == 6 and (cache.hits, cache.misses) == (6, 6)
    fresh_ids, fresh_scores = CandidateCache(tmp_path / "other").lists(LocalEngine(CountingBackend(llm)), hist, 5)
    assert np.array_equal(ids, fresh_ids) and np.array_equal(scores, fresh_scores)
    assert ids.shape == (12, 5) and ids.dtype == np.int64
    again = CountingBackend(llm)
    cache = CandidateCache(folder)
    ids2, _ = cache.lists(LocalEngine(again), hist[::-1], 5)
    assert again.generated == 0 and cache.hits == 12 and np.array_equal(ids2, ids[::-1])
    cache.lists(LocalEngine(again), hist[:2], 7)  # another n is another key
    assert again.generated == 2


def test_cache_refuses_lists_of_another_llm(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    first = LocalEngine(CountingBackend(fake_llm(tmp_path / "a", b"weights-1")))
    CandidateCache(folder).lists(first, [np.array([1, 2])], 3)
    other = CountingBackend(fake_llm(tmp_path / "b", b"weights-2"))
    with pytest.raises(TandemError, match="another LLM checkpoint.*delete .* or use another --out"):
        CandidateCache(folder).lists(LocalEngine(other), [np.array([1, 2])], 3)
    moved = CountingBackend(fake_llm(tmp_path / "c", b"weights-1"))  # same model, copied elsewhere: accepted
    CandidateCache(folder).lists(LocalEngine(moved), [np.array([1, 2])], 3)


def tiny_sasrec(n_items: int = 20, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("sasrec", n_items, default_config("sasrec", hidden_size=16, inner_size=32, max_len=8))


def test_loss_includes_an_absent_target_and_never_counts_it_twice() -> None:
    model = tiny_sasrec().eval()
    seq, lengths = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    targets = torch.tensor([9, 6])
    cands = torch.tensor([[1, 2, 3, 4], [6, 7, 8, 0]])  # row 0 misses its target; row 1 holds it, and a pad
    user = model.sequence_output(seq, lengths)
    emb = model.item_embeddings()
    row0 = F.cross_entropy((user[0] @ emb[[1, 2, 3, 4, 9]].T)[None], torch.tensor([4]))
    row1 = F.cross_entropy((user[1] @ emb[[6, 7, 8]].T)[None], torch.tensor([0]))
    got = collab_loss(model, seq, lengths, targets, cands, full_ce_weight=0.0)
    assert torch.allclose(got, (row0 + row1) / 2, atol=1e-6)
    full = F.cross_entropy(user @ emb[1:].T, targets - 1)
    got = collab_loss(model, seq, lengths, targets, cands, full_ce_weight=0.5)
    assert torch.allclose(got, (row0 + row1) / 2 + 0.5 * full, atol=1e-6)


def test_finetuning_lifts_the_target_inside_the_list(tmp_path: Path) -> None:
    model = tiny_sasrec(seed=1)
    rng = np.random.default_rng(0)
    m, n = 32, 8
    seq = torch.from_numpy(rng.integers(1, 21, size=(m, 5)))
    lengths = torch.full((m,), 5)
    cands = torch.from_numpy(np.stack([rng.choice(np.arange(1, 21), n, replace=False) for _ in range(m)]))
    pos = torch.from_numpy(rng.integers(0, n, m))  # (m,) where the target sits in its list
    targets = cands[torch.arange(m), pos]
    ex = CollabExamples(seq, lengths, targets, cands)

    def mean_rank(mdl) -> float:
        with torch.no_grad():
            s = rerank_scores(mdl, seq, lengths, cands)  # (m, n)
            return float((s > s.gather(1, pos[:, None])).sum(1).float().mean())

    before = mean_rank(model.eval())
    result = finetune(model, ex, lambda mdl: {"ndcg@10": -mean_rank(mdl)}, tmp_path, epochs=15, lr=1e-2,
                      batch_size=16, full_ce_weight=0.0, seed=0, patience=15, progress=False)
    after = mean_rank(model)
    assert after < before - 1.0 and result.best_epoch >= 0
    assert result.best_valid["ndcg@10"] == pytest.approx(-after)


def tiny_llm(folder: Path, n_items: int, fingerprint: str) -> Path:
    """An untrained tiny generative LLM checkpoint (its lists are arbitrary but valid)."""
    from llm_cloud.generative.checkpoint import write_extras

    codes = random_codes(np.random.default_rng(3), n_items)
    tok, fmt, model = make(codes, TINY, max_items=8)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_extras(folder, codes, {"profile": "tiny", "max_items": 8, "data_fingerprint": fingerprint,
                                 "n_items": n_items}, fmt, np.ones(n_items + 1, np.int64))
    return folder


def test_train_collab_cli_end_to_end(tmp_path: Path) -> None:
    from pipelines.collab import train_collab
    from pipelines.train_srm import train_srm
    from srm_device.training.checkpoint import load_checkpoint
    from srm_device.training.config import CollabConfig, TrainConfig
    from tandem.data.options import DatasetOptions, load_dataset

    data = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=30, n_items=20, length=12))
    opts = DatasetOptions(dataset=str(data))
    ds = load_dataset(opts)
    train_srm(ds, opts, "sasrec", default_config("sasrec", hidden_size=16, inner_size=32, max_len=10),
              TrainConfig(epochs=1), tmp_path / "srm", progress=False)
    llm = tiny_llm(tmp_path / "llm", ds.n_items, ds.fingerprint())
    out = tmp_path / "collab"
    proc = subprocess.run([sys.executable, "-m", "pipelines", "train", "collab", "--llm", str(llm), "--srm",
                           str(tmp_path / "srm"), "--out", str(out), "--n-candidates", "10", "--epochs", "2",
                           "--lr", "1e-3"], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "collab" in proc.stdout and "in-list ndcg@10" in proc.stdout
    model, meta = load_checkpoint(out / "srm")
    assert model.n_items == ds.n_items and "collab-tuned" in meta["collab"]["note"]
    report = json.loads((out / "report.json").read_text())
    assert {"seconds_candidates", "seconds_finetune", "n_examples", "train_recall@n", "valid_in_list",
            "valid_full", "best_epoch"} <= set(report)
    assert set(report["valid_in_list"]) == {"llm", "srm", "collab"} and set(report["valid_full"]) == {"srm", "collab"}
    assert report["n_examples"] == 60  # 2 prefixes per user
    assert sum(report["cache"].values()) == 90 and report["cache"]["misses"] > 0  # + 1 validation list per user
    again = train_collab(llm, tmp_path / "srm", out, CollabConfig(n_candidates=10, epochs=2, lr=1e-3), progress=False)
    assert again["cache"] == {"hits": 90, "misses": 0}  # a rerun reuses every list

    bad = tmp_path / "bad"  # an LLM of another catalogue
    tiny_llm(bad, ds.n_items + 1, "other")
    with pytest.raises(TandemError, match="knows 21 items"):
        train_collab(bad, tmp_path / "srm", tmp_path / "o2", CollabConfig(n_candidates=10))


@pytest.mark.parametrize("args, fragment", [
    (["--llm", "/nowhere", "--srm", "/nowhere"], "does not exist"),
    (["--llm", "x", "--srm", "y", "--n-candidates", "0"], "--n-candidates must be in 1..100"),
    (["--llm", "x", "--srm", "y", "--full-ce-weight", "-1"], "--full-ce-weight must be >= 0"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, args, fragment) -> None:
    assert main(["train", "collab", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
