"""`tandem build`: the whole pipeline into one artifact store (layout: :mod:`tandem.artifacts`).

Stages, in order: semantic IDs → generative LLM (TRL SFT) ‖ SRM (SASRec) → parameter generator → LSC4Rec
collaborative SRM (arXiv 2502.08667) → fusion and request-policy thresholds. The LLM trains in a second process with
one thread while the SRM and the parameter generator train here with the other, because the two branches are
independent and these machines have two cores; once the SRM branch is done, the trainer takes every core (it reads its
thread count from ``logs/llm_threads`` before each step).

A stage is skipped when the manifest records it with the same inputs (its settings and the hashes of the stages it
reads) and its folder still hashes to what was recorded. A stage whose inputs changed is rebuilt from scratch; a stage
that was interrupted resumes (SRM and parameter generator from their epoch state, the LLM from its trainer
checkpoint). Every stage writes its output atomically and the manifest is rewritten after each stage. Each stage
records two hashes: ``hash`` over every byte of its folder (what skipping and `tandem serve` check) and ``weights``
over its tensors and arrays only, which an interrupted and resumed build reproduces exactly. The LLM trainer dies with
the build (:mod:`tandem.process`), and unreadable candidate-cache shards are deleted before the stages run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

from pipelines import configs
from tandem import __version__
from tandem.artifacts import STAGES, Store, tree_hash, weights_hash
from tandem.data.options import DatasetOptions
from tandem.errors import TandemError
from tandem.io import atomic_write_json, atomic_write_text
from tandem.process import child_env

if TYPE_CHECKING:
    from pipelines.candidate_cache import EngineOptions

DEPENDENCY_VERSIONS = ("torch", "transformers", "trl", "peft", "numpy", "fastapi", "sentence-transformers")


class BuildConfig(BaseModel):
    """What `tandem build` builds. Defaults are the embedded default: ML-100K with the tiny profile, sized for about
    ten minutes on two CPU cores (a shorter LLM and SRM schedule than the stand-alone configs)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("ml-100k", description="built-in name, atomic-file folder or CSV/TSV (default loader options)")
    profile: Literal["tiny", "smollm"] = Field("tiny", description="generative LLM profile")
    llm_config: str | None = Field(None, description="SFT YAML; null: the packaged sft_<profile>.yaml")
    llm_epochs: float | None = Field(5, gt=0, description="override the SFT config's epochs; null: keep them")
    srm_model: dict = Field(default_factory=dict, description="SASRec config overrides (hidden_size, max_len, ...)")
    srm_epochs: int = Field(20, ge=1, description="SASRec epoch cap")
    srm_patience: int = Field(3, ge=1, description="SASRec early-stopping patience")
    paramgen: dict = Field(default_factory=dict, description="ParamGenConfig overrides")
    collab: dict = Field(default_factory=lambda: {"prefixes_per_user": 1},
                         description="CollabConfig overrides (default: LLM lists for each user's last training "
                         "prefix only, about 100 s of beam search on ML-100K)")
    n_candidates: int = Field(100, ge=1, le=100, description="LLM candidate list length")
    staleness: int = Field(5, ge=0, description="items a cached list lags behind the history in calibration")
    policy: str = Field("lsc4rec", description="request policy the server applies")
    request_ratio: float = Field(0.2, gt=0, le=1, description="its target request ratio")
    valid_users: int | None = Field(None, ge=10, description="calibrate on the first N validation users; null: all")
    parallel: bool = Field(True, description="train the LLM in a second process beside the SRM branch")

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from srm_device.policies import POLICIES

        if value not in POLICIES:
            raise ValueError(f"unknown request policy; use one of {', '.join(sorted(POLICIES))}")
        return value

    def sft_config_path(self) -> Path:
        return Path(self.llm_config) if self.llm_config else configs.packaged(f"sft_{self.profile}")

    def stage_settings(self, stage: str) -> dict:
        common = {"dataset": self.dataset}
        return {
            "sids": common,
            "llm": {**common, "profile": self.profile, "config": self.sft_config_path().read_text(),
                    "epochs": self.llm_epochs},
            "srm": {**common, "model": self.srm_model, "epochs": self.srm_epochs, "patience": self.srm_patience},
            "paramgen": self.paramgen,
            "collab": {**self.collab, "n_candidates": self.n_candidates},
            "thresholds": {"n_candidates": self.n_candidates, "staleness": self.staleness, "policy": self.policy,
                           "ratio": self.request_ratio, "valid_users": self.valid_users},
        }[stage]


UPSTREAM = {"sids": (), "llm": ("sids",), "srm": (), "paramgen": ("srm",), "collab": ("llm", "srm"),
            "thresholds": ("llm", "srm", "paramgen", "collab")}


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "tandem": __version__}
    for name in DEPENDENCY_VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class Builder:
    def __init__(self, root: str | Path, cfg: BuildConfig, progress: bool | None = None,
                 engine: EngineOptions | None = None) -> None:
        self.store, self.cfg = Store(Path(root)), cfg
        self.progress = progress
        self.engine = engine  # where the candidate stages make missing lists; not an input: lists are the same
        if not cfg.sft_config_path().is_file():
            raise TandemError(f"LLM config {cfg.sft_config_path()} does not exist; pass llm_config with an SFT YAML "
                              f"file, or leave it out to use the packaged sft_{cfg.profile}.yaml")
        self.manifest = self.store.read_manifest()
        if self.manifest and self.manifest.get("dataset") not in (None, cfg.dataset):
            raise TandemError(f"{root} holds a build for dataset {self.manifest['dataset']!r}, not {cfg.dataset!r}; "
                              f"pass another --out")
        self.manifest.setdefault("stages", {})
        self.manifest.update(dataset=cfg.dataset, profile=cfg.profile, build_config=cfg.model_dump(),
                             versions=_versions())

    # --- bookkeeping -----------------------------------------------------------------------------------------------
    def path(self, stage: str) -> Path:
        return self.store.stage_path(stage)

    def upstream_hashes(self, stage: str) -> dict:
        return {u: self.manifest["stages"].get(u, {}).get("hash") for u in UPSTREAM[stage]}

    def inputs_key(self, stage: str) -> str:
        blob = json.dumps({"settings": self.cfg.stage_settings(stage), "upstream": self.upstream_hashes(stage)},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def is_current(self, stage: str) -> bool:
        entry = self.manifest["stages"].get(stage)
        path = self.path(stage)
        return bool(entry) and entry.get("inputs") == self.inputs_key(stage) and path.exists() \
            and tree_hash(path) == entry.get("hash")

    def prepare(self, stage: str) -> None:
        """Drop a stage's output when it was built from other inputs; keep an interrupted one so it resumes."""
        entry = self.manifest["stages"].pop(stage, None)
        path = self.path(stage)
        if stage == "collab" and entry is not None and entry.get("upstream", {}).get("llm") != \
                self.upstream_hashes("collab")["llm"]:
            path = self.store.collab  # another LLM: its cached candidate lists go too
        if entry is not None and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def record(self, stage: str, seconds: float, summary: dict | None = None) -> None:
        path = self.path(stage)
        self.manifest["stages"][stage] = {"inputs": self.inputs_key(stage), "hash": tree_hash(path),
                                          "weights": weights_hash(path),
                                          "upstream": self.upstream_hashes(stage),
                                          "seconds": round(seconds, 1), "finished_at": time.strftime("%FT%T%z"),
                                          "summary": summary or {}}
        self.manifest["total_seconds"] = round(sum(s["seconds"] for s in self.manifest["stages"].values()), 1)
        atomic_write_json(self.store.manifest, self.manifest)

    # --- stages ---------------------------------------------------------------------------------------------------
    def dataset_options(self) -> DatasetOptions:
        return DatasetOptions(dataset=self.cfg.dataset)

    def run_sids(self) -> dict:
        from llm_cloud.semantic_ids.build import build_semantic_ids, save_semantic_ids

        codes, report = build_semantic_ids(self.dataset_options())
        save_semantic_ids(self.store.sids, codes, report)
        return {"collision_rate_after": report.get("collision_rate_after")}

    def start_llm(self) -> subprocess.Popen:
        from llm_cloud.train.sft_config import load_sft_config

        sft = load_sft_config(self.cfg.sft_config_path())
        update = {"dataset": self.cfg.dataset, "sids": str(self.store.sids), "output_dir": str(self.store.llm)}
        if self.cfg.llm_epochs is not None:
            update["epochs"] = self.cfg.llm_epochs
        logs = self.store.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cfg_file = atomic_write_text(logs / "llm_sft.yaml",
                                     yaml.safe_dump(sft.model_copy(update=update).model_dump(mode="json")))
        env = child_env({**os.environ, "TQDM_DISABLE": "1"})  # the trainer dies with this process
        cmd = [sys.executable, "-m", "llm_cloud.train.sft", "--config", str(cfg_file), "--out", str(self.store.llm)]
        if self.cfg.parallel:  # one core each until the SRM branch is done, then the trainer takes both
            env["OMP_NUM_THREADS"] = "1"
            cmd += ["--threads-file", str(atomic_write_text(self.llm_threads_file, "1\n"))]
        log = open(logs / "llm.log", "w")  # noqa: SIM115 - closed in finish_llm
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc.log = log  # type: ignore[attr-defined]
        return proc

    @property
    def llm_threads_file(self) -> Path:
        """The LLM trainer's thread count, which it reads before every step (``--threads-file``)."""
        return self.store.root / "logs" / "llm_threads"

    def finish_llm(self, proc: subprocess.Popen) -> dict:
        rc = proc.wait()
        proc.log.close()  # type: ignore[attr-defined]
        log = self.store.root / "logs" / "llm.log"
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise TandemError(f"LLM training failed (exit {rc}): {tail[0]}; full log: {log}")
        meta = json.loads((self.store.llm / "tandem_llm.json").read_text())
        return {"train_seconds": round(meta["train_seconds"], 1), "train_loss": meta["train_loss"]}

    def run_srm(self) -> dict:
        from pipelines.train_srm import train_srm
        from srm_device.models import default_config
        from srm_device.training.config import TrainConfig
        from tandem.data.options import load_dataset

        opts = self.dataset_options()
        ds = load_dataset(opts)
        model_cfg = default_config("sasrec", **self.cfg.srm_model)
        train_cfg = TrainConfig(epochs=self.cfg.srm_epochs, patience=self.cfg.srm_patience,
                                threads=1 if self.cfg.parallel else 0)
        result = train_srm(ds, opts, "sasrec", model_cfg, train_cfg, self.store.srm, progress=False)
        return {"best_epoch": result.best_epoch, "valid_ndcg@10": result.best_valid.get("ndcg@10")}

    def run_paramgen(self) -> dict:
        from llm_cloud.paramgen.config import ParamGenConfig
        from pipelines.train_paramgen import train_paramgen

        cfg = ParamGenConfig(**{"threads": 1 if self.cfg.parallel else 0, **self.cfg.paramgen})
        report = train_paramgen(self.store.srm, self.store.paramgen, cfg, progress=False)
        return {"test_ndcg@10": {k: v["ndcg@10"] for k, v in report["test"].items()}}

    def run_collab(self) -> dict:
        from pipelines.collab import train_collab
        from srm_device.training.config import CollabConfig

        cfg = CollabConfig(**{**self.cfg.collab, "n_candidates": self.cfg.n_candidates})
        report = train_collab(self.store.llm, self.store.srm, self.store.collab, cfg, progress=False,
                              engine=self.engine)
        return {k: v for k, v in report.items() if not isinstance(v, dict)}

    def run_thresholds(self) -> dict:
        from pipelines.thresholds import fit_thresholds

        th = fit_thresholds(self.store, self.cfg, self.engine)
        atomic_write_text(self.store.thresholds, th.model_dump_json(indent=2))
        return {"fusion": th.fusion, "srm": th.srm, "valid": th.valid}

    # --- driver ---------------------------------------------------------------------------------------------------
    def build(self) -> dict:
        from pipelines.candidate_cache import CandidateCache

        self.store.root.mkdir(parents=True, exist_ok=True)
        dropped = CandidateCache(self.store.collab / "candidates").drop_unreadable()
        if dropped:
            print(f"tandem build: deleted {len(dropped)} unreadable candidate-cache shard(s) ({dropped[0].name}"
                  f"{', ...' if len(dropped) > 1 else ''}); their lists are generated again when needed",
                  file=sys.stderr)
        bar = tqdm(total=len(STAGES), desc="tandem build", unit="stage", disable=self.progress is False)

        def run(stage: str, fn) -> None:
            """Run ``fn`` for ``stage`` unless it is current; decided now, after its upstream stages ran."""
            if not self.is_current(stage):
                bar.set_postfix_str(stage)
                self.prepare(stage)
                t0 = time.perf_counter()
                summary = fn()
                self.record(stage, time.perf_counter() - t0, summary)
            bar.update(1)

        try:
            run("sids", self.run_sids)
            llm, t_llm = None, time.perf_counter()
            if self.is_current("llm"):
                bar.update(1)
            else:
                self.prepare("llm")
                llm = self.start_llm()
                if not self.cfg.parallel:
                    bar.set_postfix_str("llm")
                    summary = self.finish_llm(llm)  # waits; the seconds below must be taken after it
                    self.record("llm", time.perf_counter() - t_llm, summary)
                    bar.update(1)
                    llm = None
            try:
                run("srm", self.run_srm)
                run("paramgen", self.run_paramgen)
            except BaseException:
                if llm is not None:
                    llm.terminate()
                raise
            if llm is not None:
                atomic_write_text(self.llm_threads_file, f"{os.cpu_count() or 1}\n")  # the SRM's core is free now
                bar.set_postfix_str("llm (waiting for the second process)")
                summary = self.finish_llm(llm)
                self.record("llm", time.perf_counter() - t_llm, summary)
                bar.update(1)
            run("collab", self.run_collab)
            run("thresholds", self.run_thresholds)
        finally:
            bar.close()
        return self.manifest


def is_complete(root: str | Path) -> bool:
    stages = Store(Path(root)).read_manifest().get("stages", {})
    return all(s in stages for s in STAGES)


def ensure_built(root: str | Path, cfg: BuildConfig | None = None, progress: bool | None = None) -> dict:
    """Build the store at ``root`` (the embedded default unless ``cfg`` says otherwise) unless it is complete."""
    if is_complete(root):
        return Store(Path(root)).read_manifest()
    return Builder(root, cfg or BuildConfig(), progress).build()
