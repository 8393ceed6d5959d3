"""Evaluation of SRMs on the leave-one-out protocol: the validation metric training selects epochs by, and the
report of a trained checkpoint on its own data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from eval.evaluate import evaluate_case
from srm_device.models import SequentialRecommender
from srm_device.training import checkpoint as ckpt
from tandem.data.options import DatasetOptions
from tandem.data.split import LeaveOneOut, get_case, leave_one_out


def make_validator(split: LeaveOneOut, max_len: int, mask_history: bool = False):
    def validate(model: SequentialRecommender) -> dict[str, float]:
        return evaluate_case(model.full_sort_scores, split.valid, max_len, mask_history)

    return validate


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


def evaluate_checkpoint(checkpoint: str | Path, split_name: str = "test", mask_history: bool | None = None,
                        ds_options: DatasetOptions | None = None) -> EvalReport:
    """Evaluate a trained SRM on its own dataset (or ``ds_options``), refusing data it was not trained on."""
    model, meta, ds = ckpt.load_srm_with_data(checkpoint, ds_options)
    if mask_history is None:
        mask_history = bool(meta.get("mask_history", False))
    case = get_case(leave_one_out(ds.sequences), split_name)
    metrics = evaluate_case(model.full_sort_scores, case, model.config.max_len, mask_history)
    return EvalReport(dataset=ds.name, model=meta["model"], split=split_name, metrics=metrics,
                      n_users=len(case.targets), mask_history=mask_history)
