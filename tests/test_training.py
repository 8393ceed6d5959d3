"""SASRec/GRU4Rec learn a sequential pattern; checkpoints round-trip and training resumes exactly."""

import numpy as np
import pytest
import torch

from eval.evaluate import evaluate_case
from eval.srm import evaluate_checkpoint
from pipelines.train_srm import train_srm
from srm_device.models import default_config
from srm_device.training.checkpoint import load_checkpoint
from srm_device.training.config import TrainConfig
from tandem.data.options import DatasetOptions, load_dataset
from tandem.data.split import leave_one_out
from tandem.errors import TandemError

SMALL = dict(hidden_size=32, inner_size=64, max_len=10, dropout=0.1)


def popularity_scores(train_seqs, n_items):
    counts = np.bincount(np.concatenate(train_seqs), minlength=n_items + 1).astype(np.float32)
    counts[0] = -np.inf

    def score_fn(seq, lengths):
        return torch.from_numpy(counts).repeat(len(seq), 1)

    return score_fn


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
def test_srm_beats_popularity_on_sequential_pattern(tmp_path, atomic_dataset, model_name):
    opts = DatasetOptions(dataset=str(atomic_dataset))
    ds = load_dataset(opts)
    cfg = TrainConfig(epochs=15, patience=15, batch_size=32, lr=3e-3, seed=1, window_stride=5)
    result = train_srm(ds, opts, model_name, default_config(model_name, **SMALL), cfg, tmp_path / "ck",
                       progress=False)
    report = evaluate_checkpoint(tmp_path / "ck", "test")
    split = leave_one_out(ds.sequences)
    pop = evaluate_case(popularity_scores(split.train, ds.n_items), split.test, max_len=10)
    assert result.epochs_run == 15
    assert report.metrics["ndcg@10"] > pop["ndcg@10"] + 0.3, (report.metrics, pop)
    assert report.metrics["hr@10"] > 0.7
    assert (tmp_path / "ck" / "training.png").stat().st_size > 1000


def test_checkpoint_round_trip_and_resume(tmp_path, atomic_dataset):
    opts = DatasetOptions(dataset=str(atomic_dataset))
    ds = load_dataset(opts)
    mcfg = default_config("sasrec", **SMALL)
    full = train_srm(ds, opts, "sasrec", mcfg, TrainConfig(epochs=4, patience=10, seed=3), tmp_path / "a",
                     progress=False)

    # interrupt after epoch 1, then run the same command again: it resumes from state/
    def stop_after_two(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_srm(ds, opts, "sasrec", mcfg, TrainConfig(epochs=4, patience=10, seed=3), tmp_path / "b",
                  progress=False, on_epoch_end=stop_after_two)
    resumed_epochs = []
    resumed = train_srm(ds, opts, "sasrec", mcfg, TrainConfig(epochs=4, patience=10, seed=3), tmp_path / "b",
                        progress=False, on_epoch_end=lambda e, row: resumed_epochs.append(e))
    assert resumed_epochs == [2, 3]
    assert resumed.best_valid == pytest.approx(full.best_valid)
    ma, _ = load_checkpoint(tmp_path / "a")
    mb, meta = load_checkpoint(tmp_path / "b")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert meta["model"] == "sasrec" and meta["n_items"] == ds.n_items

    # a finished run is not retrained; asking for more epochs continues it
    again = []
    train_srm(ds, opts, "sasrec", mcfg, TrainConfig(epochs=4, patience=10, seed=3), tmp_path / "b",
              progress=False, on_epoch_end=lambda e, row: again.append(e))
    assert again == []
    train_srm(ds, opts, "sasrec", mcfg, TrainConfig(epochs=5, patience=10, seed=3), tmp_path / "b",
              progress=False, on_epoch_end=lambda e, row: again.append(e))
    assert again == [4]


def test_resume_refuses_other_settings(tmp_path, atomic_dataset):
    opts = DatasetOptions(dataset=str(atomic_dataset))
    ds = load_dataset(opts)
    train_srm(ds, opts, "sasrec", default_config("sasrec", **SMALL), TrainConfig(epochs=1), tmp_path / "c",
              progress=False)
    with pytest.raises(TandemError, match=r"other settings \(train_config.lr: 0.001 -> 0.01\).*--overwrite"):
        train_srm(ds, opts, "sasrec", default_config("sasrec", **SMALL), TrainConfig(epochs=1, lr=0.01),
                  tmp_path / "c", progress=False)
