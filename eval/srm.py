"""Train and evaluate SRMs on the leave-one-out protocol; the glue between data, trainer and metrics."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from eval.evaluate import evaluate_case
from eval.split import LeaveOneOut, get_case, leave_one_out
from srm_device.models import SequentialRecommender, SRMConfig, build_model
from srm_device.training import checkpoint as ckpt
from srm_device.training.config import TrainConfig
from srm_device.training.trainer import EpochHook, TrainResult, fit
from tandem import __version__
from tandem.data.dataset import SequenceDataset
from tandem.data.options import DatasetOptions, load_dataset


def make_validator(split: LeaveOneOut, max_len: int, mask_history: bool = False):
    def validate(model: SequentialRecommender) -> dict[str, float]:
        return evaluate_case(model.full_sort_scores, split.valid, max_len, mask_history)

    return validate


def train_srm(ds: SequenceDataset, ds_options: DatasetOptions, model_name: str, model_cfg: SRMConfig,
              train_cfg: TrainConfig, out: str | Path, overwrite: bool = False, mask_history: bool = False,
              on_epoch_end: EpochHook | None = None, progress: bool | None = None) -> TrainResult:
    split = leave_one_out(ds.sequences)
    import torch

    torch.manual_seed(train_cfg.seed)  # initialisation
    model = build_model(model_name, ds.n_items, model_cfg)
    meta = {
        "model": model_name,
        "model_config": model_cfg.to_dict(),
        "n_items": ds.n_items,
        "dataset": ds_options.to_dict(),
        "dataset_name": ds.name,
        "data_fingerprint": ds.fingerprint(),
        "mask_history": mask_history,
        "tandem_version": __version__,
    }
    result = fit(model, meta, split.train, make_validator(split, model_cfg.max_len, mask_history), train_cfg, out,
                 overwrite=overwrite, on_epoch_end=on_epoch_end, progress=progress)
    try:
        from eval.plots import plot_training_curve

        plot_training_curve(result.history, Path(out) / "training.png", title=f"{model_name} on {ds.name}")
    except ImportError:  # matplotlib is optional for training
        pass
    return result


@dataclass
class EvalReport:
    dataset: str
    model: str
    split: str
    metrics: dict[str, float]
    n_users: int
    mask_history: bool

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def load_srm_with_data(checkpoint: str | Path, ds_options: DatasetOptions | None = None):
    """(model, meta, dataset): a trained SRM and its own dataset (or ``ds_options``), refusing data it was not
    trained on."""
    model, meta = ckpt.load_checkpoint(checkpoint)
    own = ds_options is None
    if own:
        ds_options = DatasetOptions(**meta.get("dataset", {}))
    ds = load_dataset(ds_options)
    fix = "its dataset changed since training: retrain the SRM" if own else "use the same --dataset and filters"
    ckpt.check_trained_on(checkpoint, meta, ds, fix)
    return model, meta, ds


def evaluate_checkpoint(checkpoint: str | Path, split_name: str = "test", mask_history: bool | None = None,
                        ds_options: DatasetOptions | None = None) -> EvalReport:
    """Evaluate a trained SRM on its own dataset (or ``ds_options``), refusing data it was not trained on."""
    model, meta, ds = load_srm_with_data(checkpoint, ds_options)
    if mask_history is None:
        mask_history = bool(meta.get("mask_history", False))
    case = get_case(leave_one_out(ds.sequences), split_name)
    metrics = evaluate_case(model.full_sort_scores, case, model.config.max_len, mask_history)
    return EvalReport(dataset=ds.name, model=meta["model"], split=split_name, metrics=metrics,
                      n_users=len(case.targets), mask_history=mask_history)
