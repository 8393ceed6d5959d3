"""Build and measure a ThinkRec model on a stated subset (arXiv 2505.15091), each step resumable from its files.

1. **samples**: pointwise train samples (``train_users`` users × ``per_user`` positions, ``train_negatives`` uniform
   negatives each) and test samples (``test_users`` held-out items, ``test_negatives`` negatives each).
2. **keywords**: every item in those prompts gets up to 10 keywords from the keyword LLM, cached.
3. **traces**: the untrained student scores the train samples; the teacher explains the ones it gets wrong (at most
   ``max_traces``), told the right label.
4. **train**: ``bare/`` (bare labels only: thinking off) and ``general/`` (bare labels + trace targets).
5. **experts**: users clustered on the SRM's user vectors (K by silhouette over 2..10); one adapter per group,
   continued from ``general`` on that group's samples.
6. the model folder ``OUT/model`` (:mod:`llm_cloud.thinkrec.model`), then :func:`evaluate` on the test samples.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llm_cloud.thinkrec.samples import Sample
from tandem.io import atomic_directory, atomic_write_json, atomic_write_text


@dataclass
class PipelineConfig:
    out: str = field(default="runs/thinkrec", metadata={"help": "output folder"})
    store: str | None = field(default=None, metadata={"help": "artifact store with the SRM (default: ml-100k tiny)"})
    train_users: int = field(default=96, metadata={"help": "users whose training positions are sampled"})
    per_user: int = field(default=2, metadata={"help": "training positions per user"})
    train_negatives: int = field(default=1, metadata={"help": "uniform negatives per training positive"})
    test_users: int = field(default=64, metadata={"help": "users whose held-out item is tested"})
    test_negatives: int = field(default=4, metadata={"help": "uniform negatives per test positive"})
    think_users: int = field(default=24, metadata={"help": "test users also evaluated with thinking (slow)"})
    max_traces: int = field(default=64, metadata={"help": "teacher traces at most (for wrong student answers)"})
    trace_tokens: int = field(default=96, metadata={"help": "tokens per teacher trace / generated thought"})
    teacher: str = field(default="local", metadata={"help": "'local' (SmolLM2) or an OpenAI-compatible base URL"})
    teacher_model: str | None = field(default=None, metadata={"help": "the served model name for a URL teacher"})
    epochs: float = field(default=1.0, metadata={"help": "epochs of the bare and general adapters"})
    expert_epochs: float = field(default=1.0, metadata={"help": "epochs of each group adapter"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    backend: str = field(default="transformers", metadata={
        "help": "engine that scores the arms: transformers, or vllm (the [vllm] extra; each adapter a per-request "
                "LoRA); the adapters train on transformers either way"})

    def validate(self) -> None:
        """ValueError naming the setting, its value and the fix."""
        for name in ("train_users", "per_user", "train_negatives", "test_users", "test_negatives", "trace_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; pass a positive count")
        for name in ("think_users", "max_traces"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.epochs <= 0 or self.expert_epochs <= 0:
            raise ValueError(f"epochs and expert_epochs must be > 0, got {self.epochs} and {self.expert_epochs}")
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be transformers or vllm, got {self.backend!r}")
        if self.teacher != "local" and not self.teacher_model:
            raise ValueError(f"teacher {self.teacher!r} is a URL, so teacher_model (the served model name) is "
                             f"needed; pass --teacher-model NAME")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


class Pipeline:
    def __init__(self, cfg: PipelineConfig) -> None:
        from llm_cloud.thinkrec.keywords import KeywordCache
        from llm_cloud.thinkrec.model import ItemTexts
        from llm_common.smollm import base_model_dir
        from srm_device.training.checkpoint import load_srm_with_data
        from tandem.artifacts import Store, default_store
        from tandem.data.split import leave_one_out

        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = Store(Path(cfg.store) if cfg.store else default_store("ml-100k", "tiny"))
        self.srm, _, self.ds = load_srm_with_data(self.store.srm)
        self.split = leave_one_out(self.ds.sequences)
        self.base = base_model_dir()
        self.texts = ItemTexts(self.ds.catalogue, KeywordCache(self.out / "keywords.json"))
        self.report: dict[str, Any] = {"config": asdict(cfg)}

    # 1
    def samples(self) -> tuple[list[Sample], list[Sample]]:
        from llm_cloud.thinkrec.samples import eval_samples, pick_users, train_samples

        c, seqs, n = self.cfg, self.ds.sequences, self.ds.n_items
        train = train_samples(seqs, self.split, pick_users(self.split, c.train_users, c.seed), n, c.per_user,
                              c.train_negatives, c.seed)
        test = eval_samples(seqs, self.split.test, pick_users(self.split, c.test_users, c.seed + 1), n,
                            c.test_negatives, c.seed + 1)
        self.report["samples"] = {"train": len(train), "train_positive": sum(s.label for s in train),
                                  "test": len(test), "test_positive": sum(s.label for s in test),
                                  "negatives": "uniform over items the user never interacted with"}
        return train, test

    # 2
    def keywords(self, samples: list[Sample], generator) -> None:
        items = {i for s in samples for i in (*s.history, s.item)}
        t0 = time.perf_counter()
        cache = self.texts.keywords
        cache.ensure(sorted(items), self.texts.meta, generator, progress=True)
        done = [cache.keywords(i) for i in items]
        self.report["keywords"] = {"items": len(items), "generated": cache.generated, "reused": cache.hits,
                                   "seconds": time.perf_counter() - t0, "generator": generator.name,
                                   "mean_keywords": float(np.mean([len(k) for k in done])),
                                   "empty": sum(1 for k in done if not k)}

    def rows(self, samples: list[Sample], think: bool) -> list[dict]:
        return [{"id": s.id, "user": s.user, "prompt": self.texts.prompt(s.history, s.item, think=think),
                 "label": s.label} for s in samples]

    @cached_property
    def student(self):
        """The untrained student: the plain base model (no adapter), loaded once for the trace step and the base
        arm; :meth:`drop_student` frees it."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llm_cloud.thinkrec.model import ThinkRecModel

        return ThinkRecModel(AutoModelForCausalLM.from_pretrained(self.base), AutoTokenizer.from_pretrained(self.base),
                             768, None, [])

    def drop_student(self) -> None:
        self.__dict__.pop("student", None)

    # 3
    def traces(self, train: list[Sample], teacher) -> dict[str, str]:
        from llm_cloud.thinkrec.traces import read_traces, synthesize_traces, wrong_rows

        path = self.out / "traces.jsonl"
        student_file = self.out / "student_p_yes.json"
        bare = self.rows(train, think=False)
        if not student_file.is_file():
            p_yes = self.student.p_yes([r["prompt"] for r in bare], adapter=None, progress=True)
            atomic_write_json(student_file, p_yes.tolist())
        p = json.loads(student_file.read_text())
        wrong = wrong_rows(self.rows(train, think=True), p)
        rng = np.random.default_rng(self.cfg.seed)
        chosen = [wrong[i] for i in sorted(rng.permutation(len(wrong))[: self.cfg.max_traces])]
        self.report["traces"] = synthesize_traces(chosen, teacher, path, max_tokens=self.cfg.trace_tokens,
                                                  progress=True)
        self.report["traces"] |= {"student_wrong": len(wrong), "student_right": len(bare) - len(wrong)}
        return read_traces(path)

    # 4, 5
    def train(self, name: str, rows: list[dict], epochs: float, init: Path | None = None) -> Path:
        from llm_cloud.thinkrec.train import ThinkRecTrainConfig, run_train

        folder = self.out / name
        if not (folder / "final" / "adapter_config.json").is_file():
            _write_jsonl(folder.with_suffix(".jsonl"), rows)
            run_train(ThinkRecTrainConfig(data=str(folder.with_suffix(".jsonl")), out=str(folder),
                                          model=str(self.base), init_adapter=str(init) if init else None,
                                          epochs=epochs, seed=self.cfg.seed))
        self.report[f"train_{name}"] = json.loads((folder / "train_report.json").read_text())
        return folder / "final"

    def user_vectors(self, histories: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        from srm_device.scoring import user_vector

        self.srm.eval()
        return {u: user_vector(self.srm, h.tolist())[0].numpy() for u, h in histories.items()}

    def experts(self, train: list[Sample], general_rows: list[dict], general: Path) -> tuple[list[Path], Any]:
        from llm_cloud.thinkrec.experts import Clustering, choose_clusters

        path = self.out / "clusters.json"
        row = {int(u): k for k, u in enumerate(self.split.valid.users)}
        users = sorted({s.user for s in train})
        if path.is_file():
            clustering = Clustering.from_json(json.loads(path.read_text()))
        else:
            vecs = self.user_vectors({u: self.split.train[row[u]] for u in users})
            clustering = choose_clusters(np.stack([vecs[u] for u in users]), seed=self.cfg.seed)
            atomic_write_json(path, clustering.to_json() | {"users": users})
        group = dict(zip(users, clustering.labels.tolist()))
        self.report["clusters"] = {"k": clustering.k, "silhouette": clustering.silhouette,
                                   "sizes": np.bincount(clustering.labels, minlength=clustering.k).tolist()}
        adapters = [self.train(f"experts/g{k}", [r for r in general_rows if group[r["user"]] == k],
                               self.cfg.expert_epochs, init=general) for k in range(clustering.k)]
        return adapters, clustering

    def assemble(self, general: Path, experts: list[Path]) -> Path:
        from llm_cloud.thinkrec.model import GENERAL, META

        folder = self.out / "model"
        with atomic_directory(folder) as tmp:
            shutil.copytree(general, tmp / GENERAL)
            for k, path in enumerate(experts):
                shutil.copytree(path, tmp / "experts" / f"g{k}")
            shutil.copy(self.out / "clusters.json", tmp / "clusters.json")
            shutil.copy(self.out / "keywords.json", tmp / "keywords.json")
            atomic_write_json(tmp / META, {"base_model": str(self.base), "max_length": 768,
                                           "experts": len(experts), "srm": str(self.store.srm)})
        return folder
