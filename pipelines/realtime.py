"""`tandem eval realtime`: train the cloud models on the cloud parts of the real-time protocol, then measure every
device method on the real-time positions (:mod:`eval.realtime`).

Each stage writes into the work folder and resumes from it: ``srm/`` (the SRM, ``tandem train srm``), ``paramgen/``
(the head hypernetwork and Persona codebook, ``tandem train paramgen``), ``duet/`` (the multi-layer generator, SASRec
only), the same three under ``nested/`` for the nested split, then the report. A rerun with the same options
only evaluates again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tandem.data.options import DatasetOptions
from tandem.data.protocols import SplitOptions

log = logging.getLogger(__name__)


@dataclass
class RealTimeRunConfig:
    work: str | None = field(default=None, metadata={
        "help": "folder for the trained models (resumed); default $TANDEM_HOME/runs/realtime/DATASET-CUT"})
    model: str = field(default="sasrec", metadata={"help": "device SRM: sasrec or gru4rec"})
    epochs: int = field(default=200, metadata={"help": "SRM: maximum epochs (early stopping on validation)"})
    patience: int = field(default=10, metadata={"help": "SRM: epochs without a better validation NDCG@10"})
    paramgen_epochs: int = field(default=30, metadata={"help": "parameter generator: maximum epochs"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    negatives: int = field(default=20, metadata={"help": "sampled negatives per position for AUC/UAUC"})
    retrain: bool = field(default=True, metadata={"help": "measure on-device retraining (backprop on the device)"})
    retrain_steps: int = field(default=3, metadata={"help": "retrain: Adam steps per on-device update"})
    retrain_every: int = field(default=5, metadata={"help": "retrain: fine-tune after every this many new items"})
    retrain_lr: float = field(default=1e-3, metadata={"help": "retrain: learning rate"})
    seed: int = field(default=2020, metadata={"help": "random seed of the training runs"})
    paramgen_seed: int | None = field(default=None, metadata={
        "help": "random seed of the generators' training alone (default: --seed); with the SRM of another run "
                "copied into --work, measures how much a generator's result depends on its seed"})
    nested: bool = field(default=True, metadata={
        "help": "also train the cloud models on a nested split (the SRM on an older cloud part, the generators on "
                "the cloud-part positions it has not fitted) and report their methods as *_nested"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.model not in ("sasrec", "gru4rec"):
            raise ValueError(f"--model must be sasrec or gru4rec, got {self.model!r}")
        for name in ("epochs", "patience", "paramgen_epochs", "negatives", "retrain_steps", "retrain_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def default_work(ds_options: DatasetOptions, split: SplitOptions) -> Path:
    from tandem.paths import tandem_home

    name = Path(ds_options.dataset).name.replace(".", "_")
    arg = f"f{split.time_fraction}" if split.cut == "global-time" else f"rho{split.rho}"
    return tandem_home() / "runs" / "realtime" / f"{name}-{split.cut}-{arg}"


def run_realtime(ds_options: DatasetOptions, split: SplitOptions, cfg: RealTimeRunConfig) -> dict:
    """Train (or resume) the cloud models on the cloud parts, evaluate the device methods; return the report."""
    import torch

    from eval.realtime import RealTimeEvalConfig, evaluate_realtime
    from srm_device.adaptation.retrain import RetrainConfig
    from tandem.data.options import load_dataset
    from tandem.data.protocols import make_split

    cfg.validate()
    split = dataclasses.replace(split, protocol="realtime")
    split.validate()
    work = Path(cfg.work) if cfg.work else default_work(ds_options, split)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(ds_options)
    data_split = make_split(ds, split)
    if len(data_split.test.targets) == 0:
        raise ValueError(f"{split.name} leaves no real-time positions on {ds.name}; lower --time-fraction or use "
                         f"--cut user-fraction")
    seconds: dict[str, float] = {}
    models, cloud_report = _train_cloud(ds, ds_options, split, cfg, work, seconds, "")
    nested = None
    if cfg.nested:
        nested, cloud_report["nested"] = _train_cloud(ds, ds_options, dataclasses.replace(split, nest=1), cfg,
                                                      work / "nested", seconds, "nested_")
    t0 = time.perf_counter()
    retrain = RetrainConfig(cfg.retrain_steps, cfg.retrain_lr, cfg.retrain_every) if cfg.retrain else None
    report = evaluate_realtime(models, data_split, RealTimeEvalConfig(negatives=cfg.negatives, seed=0,
                                                                      retrain=retrain), nested)
    seconds["evaluate"] = time.perf_counter() - t0
    report["protocol"] = {**split.to_dict(), "name": split.name, **data_split.info}
    report["dataset"] = {"name": ds.name, "options": ds_options.to_dict(), "users": ds.n_users,
                         "items": ds.n_items}
    report["cloud_models"] = cloud_report
    report["config"] = cfg.to_dict()
    report["seconds"] = seconds
    report["work"] = str(work)
    return report


def _train_cloud(ds, ds_options: DatasetOptions, split: SplitOptions, cfg: RealTimeRunConfig, work: Path,
                 seconds: dict[str, float], prefix: str):
    """Train (or resume) the SRM and its generators on ``split`` in ``work``; return them and their summary."""
    from eval.realtime import CloudModels
    from llm_cloud.paramgen.checkpoint import load_device_models
    from llm_cloud.paramgen.config import ParamGenConfig
    from pipelines.train_paramgen import train_paramgen
    from pipelines.train_srm import train_srm
    from srm_device.models import default_config
    from srm_device.training.config import TrainConfig

    t0 = time.perf_counter()
    srm_result = train_srm(ds, ds_options, cfg.model, default_config(cfg.model),
                           TrainConfig(epochs=cfg.epochs, patience=cfg.patience, threads=cfg.threads, seed=cfg.seed),
                           work / "srm", split_opts=split)
    seconds[prefix + "srm"] = time.perf_counter() - t0
    pg_cfg = ParamGenConfig(epochs=cfg.paramgen_epochs, threads=cfg.threads,
                            seed=cfg.seed if cfg.paramgen_seed is None else cfg.paramgen_seed)
    t0 = time.perf_counter()
    pg_report = train_paramgen(work / "srm", work / "paramgen", pg_cfg)
    seconds[prefix + "paramgen"] = time.perf_counter() - t0
    srm, _, gen, book, recent_k = load_device_models(work / "srm", work / "paramgen")
    report = {"split": split.name,
              "srm": {"model": cfg.model, "best_epoch": srm_result.best_epoch, "epochs_run": srm_result.epochs_run,
                      "valid": srm_result.best_valid},
              "paramgen": {"best_epoch": pg_report["best_epoch"], "epochs_run": pg_report["epochs_run"]}}
    layer_gen = None
    if cfg.model == "sasrec":
        from llm_cloud.paramgen.layers import load_layer_generator
        from pipelines.train_paramgen import train_layer_generator

        t0 = time.perf_counter()
        report["duet"] = train_layer_generator(work / "srm", work / "duet", pg_cfg)
        seconds[prefix + "duet"] = time.perf_counter() - t0
        layer_gen = load_layer_generator(work / "duet", ds.n_items)  # (generator, Persona codebook)
    return CloudModels(srm, gen, book, recent_k, layer_gen), report
