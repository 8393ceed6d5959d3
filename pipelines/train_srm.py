"""`tandem train srm`: train one sequential recommender on a protocol's training part (leave-one-out, or the cloud
parts of the real-time protocol), with data, trainer and the validation metric wired together, then draw its training
curve."""

from __future__ import annotations

from pathlib import Path

from eval.srm import make_validator
from srm_device.models import SRMConfig, build_model
from srm_device.training.config import TrainConfig
from srm_device.training.trainer import EpochHook, TrainResult, fit
from tandem import __version__, distributed
from tandem.data.dataset import SequenceDataset
from tandem.data.options import DatasetOptions
from tandem.data.protocols import SplitOptions, make_split


def train_srm(ds: SequenceDataset, ds_options: DatasetOptions, model_name: str, model_cfg: SRMConfig,
              train_cfg: TrainConfig, out: str | Path, overwrite: bool = False, mask_history: bool = False,
              on_epoch_end: EpochHook | None = None, progress: bool | None = None,
              split_opts: SplitOptions | None = None) -> TrainResult:
    split_opts = split_opts or SplitOptions()
    split = make_split(ds, split_opts)
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
        "split": split_opts.to_dict(),
        "tandem_version": __version__,
    }
    result = fit(model, meta, split.train, make_validator(split, model_cfg.max_len, mask_history), train_cfg, out,
                 overwrite=overwrite, on_epoch_end=on_epoch_end, progress=progress)
    if not distributed.is_main():
        return result
    try:
        from eval.plots import plot_training_curve

        plot_training_curve(result.history, Path(out) / "training.png", title=f"{model_name} on {ds.name}")
    except ImportError:  # matplotlib is optional for training
        pass
    return result
