"""`tandem tune srm`: hyperparameter search for a sequential recommender with Optuna (TPE), selected on validation
NDCG@10 only, resumable.

The search space is a YAML file (:func:`load_space`)::

    model: sasrec                  # or gru4rec
    fixed: {epochs: 30, patience: 5, threads: 1}          # optional: settings every trial shares
    params:                        # what the sampler chooses; each name is an SRMConfig or TrainConfig field
      lr:          {float: [1.0e-4, 3.0e-3], log: true}
      dropout:     {float: [0.1, 0.5]}
      hidden_size: {choice: [32, 64, 128]}
      n_layers:    {int: [1, 3]}

Layout of ``--out``::

    study.journal        Optuna's append-only journal: every trial, its parameters and its value
    trials/<key>/        one SRM checkpoint per parameter set (key = hash of the settings), resumable by epoch
    best.yaml            the best trial's settings and validation metrics (rewritten after each trial)
    best/                a copy of the best trial's checkpoint, for `tandem eval srm --checkpoint OUT/best`
    trials.png           validation NDCG@10 of every trial and the best so far

A trial killed mid-way leaves a RUNNING record in the journal; the next run marks it failed and enqueues its
parameters again, and the retried trial resumes its checkpoint where the epoch state stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import yaml

from srm_device.models import SRMConfig, default_config
from srm_device.training.config import TrainConfig
from tandem.data.dataset import SequenceDataset
from tandem.data.options import DatasetOptions
from tandem.errors import TandemError
from tandem.io import atomic_directory, atomic_write_text

STUDY = "tandem-tune-srm"
MODELS = ("sasrec", "gru4rec")
_KINDS = ("float", "int", "choice")


@dataclasses.dataclass
class Space:
    model: str
    fixed: dict
    params: dict  # name -> {"float"|"int": [lo, hi], "log": bool} | {"choice": [...]}


def _fields() -> dict[str, str]:
    return {**{f.name: "model" for f in dataclasses.fields(SRMConfig)},
            **{f.name: "train" for f in dataclasses.fields(TrainConfig)}}


def load_space(path: str | Path) -> Space:
    """Read and check a search-space YAML; :class:`TandemError` names the first bad entry and the fix."""
    from tandem.config import read_yaml_mapping

    raw = read_yaml_mapping(path, "search space", "pass --space with a YAML file (see `tandem tune srm --help`)")
    unknown = sorted(set(raw) - {"model", "fixed", "params"})
    if unknown:
        raise TandemError(f"search space {path}: unknown key {unknown[0]!r}; the keys are model, fixed, params")
    model = raw.get("model", "sasrec")
    if model not in MODELS:
        raise TandemError(f"search space {path}: model {model!r} is not one of {', '.join(MODELS)}")
    fields = _fields()
    params, fixed = raw.get("params") or {}, raw.get("fixed") or {}
    if not isinstance(params, dict) or not params:
        raise TandemError(f"search space {path}: 'params' must map at least one setting to a range, e.g. "
                          f"lr: {{float: [1.0e-4, 3.0e-3], log: true}}")
    for name in [*params, *fixed]:
        if name not in fields:
            raise TandemError(f"search space {path}: {name!r} is not an SRM or training setting; settings are "
                              f"{', '.join(sorted(fields))}")
    for name, spec in params.items():
        kinds = [k for k in _KINDS if isinstance(spec, dict) and k in spec]
        if len(kinds) != 1 or set(spec) - {*_KINDS, "log"}:
            raise TandemError(f"search space {path}: params.{name} must have exactly one of float: [lo, hi], "
                              f"int: [lo, hi] or choice: [...] (and optionally log: true), got {spec!r}")
        kind = kinds[0]
        values = spec[kind]
        if not isinstance(values, list) or not values or (kind != "choice" and (
                len(values) != 2 or not all(isinstance(v, int | float) for v in values) or values[0] >= values[1])):
            raise TandemError(f"search space {path}: params.{name}.{kind} must be "
                              f"{'a non-empty list' if kind == 'choice' else '[lo, hi] with lo < hi'}, got {values!r}")
    overlap = sorted(set(params) & set(fixed))
    if overlap:
        raise TandemError(f"search space {path}: {overlap[0]!r} is both fixed and searched; keep it in one place")
    return Space(model, fixed, params)


def _suggest(trial, space: Space) -> dict:
    out = {}
    for name, spec in space.params.items():
        if "choice" in spec:
            out[name] = trial.suggest_categorical(name, spec["choice"])
        elif "int" in spec:
            out[name] = trial.suggest_int(name, int(spec["int"][0]), int(spec["int"][1]), log=bool(spec.get("log")))
        else:
            out[name] = trial.suggest_float(name, float(spec["float"][0]), float(spec["float"][1]),
                                            log=bool(spec.get("log")))
    return out


def trial_configs(space: Space, chosen: dict) -> tuple[SRMConfig, TrainConfig]:
    """The model and training configs of one trial: the model's defaults, then ``fixed``, then the chosen values.
    Raises ValueError for a combination the model refuses (the trial is then pruned)."""
    fields, settings = _fields(), {**space.fixed, **chosen}
    model_cfg = default_config(space.model, **{k: v for k, v in settings.items() if fields[k] == "model"})
    train_cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in settings.items() if fields[k] == "train"})
    model_cfg.validate()
    train_cfg.validate()
    return model_cfg, train_cfg


def _key(model: str, model_cfg: SRMConfig, train_cfg: TrainConfig) -> str:
    blob = json.dumps([model, model_cfg.to_dict(), {k: v for k, v in train_cfg.to_dict().items()
                                                    if k not in TrainConfig.RESUMABLE_CHANGES}], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _study(out: Path, seed: int):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)  # killed: retry its params
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return study


def tune_srm(ds: SequenceDataset, ds_options: DatasetOptions, space: Space, out: str | Path, trials: int,
             timeout: float | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Run trials until ``trials`` have completed in the study at ``out`` (earlier runs count) or ``timeout``
    seconds pass; return the summary written to ``best.yaml``."""
    import optuna

    from pipelines.train_srm import train_srm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study = _study(out, seed)
    done = lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))  # noqa: E731

    def objective(trial) -> float:
        chosen = _suggest(trial, space)
        try:
            model_cfg, train_cfg = trial_configs(space, chosen)
        except ValueError as exc:  # e.g. hidden_size not divisible by n_heads
            raise optuna.TrialPruned(str(exc)) from None
        key = _key(space.model, model_cfg, train_cfg)
        trial.set_user_attr("checkpoint", f"trials/{key}")
        result = train_srm(ds, ds_options, space.model, model_cfg, train_cfg, out / "trials" / key,
                           progress=progress)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("valid", result.best_valid)
        trial.set_user_attr("train_seconds", result.train_seconds)
        return float(result.best_valid["ndcg@10"])

    start, attempts, summary = time.monotonic(), 0, None
    while done() < trials:
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if (left is not None and left <= 0) or attempts >= 10 * trials:  # a space of mostly invalid combinations
            break
        attempts += 1
        study.optimize(objective, n_trials=1, timeout=left, catch=())
        summary = write_best(study, space, out)  # after every trial, so a killed study keeps its best so far
    return summary or write_best(study, space, out)


def write_best(study, space: Space, out: Path) -> dict:
    """``best.yaml``, ``best/`` and ``trials.png`` from the study as it stands."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TandemError(f"no trial of {out} has completed yet; run again with more --trials or a longer --timeout")
    best = max(complete, key=lambda t: t.value)
    model_cfg, train_cfg = trial_configs(space, best.params)
    summary = {"model": space.model, "trial": best.number, "valid_ndcg@10": best.value,
               "valid": best.user_attrs.get("valid"), "best_epoch": best.user_attrs.get("best_epoch"),
               "params": best.params, "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
               "checkpoint": "best", "trials_complete": len(complete),
               "trials_pruned": len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))}
    atomic_write_text(out / "best.yaml", yaml.safe_dump(summary, sort_keys=False))
    src = out / best.user_attrs["checkpoint"]
    marker = out / "best" / "TRIAL"
    if not (marker.exists() and marker.read_text() == best.user_attrs["checkpoint"]):
        with atomic_directory(out / "best") as tmp:
            for p in src.iterdir():
                if p.is_file():
                    shutil.copy2(p, tmp / p.name)
            (tmp / "TRIAL").write_text(best.user_attrs["checkpoint"])
    try:
        from eval.plots import plot_trials

        plot_trials([(t.number, t.value) for t in complete], out / "trials.png", title=f"tune {space.model}")
    except ImportError:  # matplotlib is optional
        pass
    return summary
