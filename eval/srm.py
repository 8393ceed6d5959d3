"""Evaluation of SRMs on their protocol (leave-one-out, or real-time): the validation metric training selects
epochs by, and the report of a trained checkpoint on its own data and split. On the real-time protocol a user has one
test row per real-time position; the report gives the mean over positions (``metrics``) and the mean over users of
each user's mean (``metrics_by_user``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.evaluate import evaluate_case, rank_targets
from eval.metrics import metrics_from_ranks, user_mean_metrics
from srm_device.models import SequentialRecommender
from srm_device.training import checkpoint as ckpt
from tandem.data.options import DatasetOptions
from tandem.data.protocols import make_split, split_from_dict
from tandem.data.split import get_case


def make_validator(split, max_len: int, mask_history: bool = False):
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
    n_rows: int  # rows evaluated: one per user on leave-one-out, one per real-time position on the real-time protocol
    metrics_by_user: dict[str, float]  # each user's mean over their rows, then the mean over users
    protocol: str = "loo"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def evaluate_checkpoint(checkpoint: str | Path, split_name: str = "test", mask_history: bool | None = None,
                        ds_options: DatasetOptions | None = None) -> EvalReport:
    """Evaluate a trained SRM on its own dataset (or ``ds_options``), refusing data it was not trained on."""
    model, meta, ds = ckpt.load_srm_with_data(checkpoint, ds_options)
    if mask_history is None:
        mask_history = bool(meta.get("mask_history", False))
    split_opts = split_from_dict(meta.get("split"))
    case = get_case(make_split(ds, split_opts), split_name)
    ranks = rank_targets(model.full_sort_scores, case, model.config.max_len, mask_history)
    by_user = user_mean_metrics(case.users, ranks)
    return EvalReport(dataset=ds.name, model=meta["model"], split=split_name, metrics=metrics_from_ranks(ranks),
                      n_users=len(np.unique(case.users)), mask_history=mask_history, protocol=split_opts.name,
                      n_rows=len(case.targets), metrics_by_user=by_user)

