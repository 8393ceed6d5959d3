"""Measure ThinkRec (arXiv 2505.15091) on a stated ML-100K subset: AUC, UAUC and NDCG@5 without thinking, with
thinking, and with thinking plus user-group experts; the gate's decisions; trace synthesis time.

    OMP_NUM_THREADS=1 tandem eval thinkrec [--train-users 96 --test-users 64 --think-users 24] [--out DIR]

Every step keeps its files in ``--out`` (samples, keywords, traces, adapters, per-arm scores), so a rerun continues.
The report is ``OUT/report.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from eval.pointwise import pointwise_report
from llm_cloud.thinkrec.engines import load_model
from llm_cloud.thinkrec.samples import Sample
from llm_common.teacher import make_teacher
from pipelines.thinkrec_build import Pipeline, PipelineConfig
from tandem.io import atomic_write_json


def _cached(path: Path, fn) -> Any:
    if path.is_file():
        return json.loads(path.read_text())
    value = fn()
    atomic_write_json(path, value)
    return value


def score_arm(pipe: Pipeline, model, samples: list[Sample], think: bool, experts: bool,
              adapter: str | None = None) -> dict:
    """Scores of one arm (and the thoughts when thinking), routed per user when ``experts``."""
    vecs = pipe.user_vectors({s.user: np.asarray(s.history) for s in samples}) if experts else {}
    prompts = [pipe.texts.prompt(s.history, s.item, think=think) for s in samples]
    routes, names = {}, []
    for s in samples:
        name, r = model.adapter_for(vecs[s.user]) if experts else (adapter, None)
        routes[s.user] = r.kind if r else "none"
        names.append(name)
    scores, thoughts = np.zeros(len(samples)), [None] * len(samples)
    t0 = time.perf_counter()
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        ps = [prompts[i] for i in idx]
        tr = model.think(ps, adapter=name, max_new_tokens=pipe.cfg.trace_tokens, progress=True) if think else None
        scores[idx] = model.p_yes(ps, tr, adapter=name, progress=True)
        for j, i in enumerate(idx):
            thoughts[i] = tr[j] if tr else None
    return {"scores": scores.tolist(), "thoughts": thoughts, "routes": routes,
            "seconds_per_sample": (time.perf_counter() - t0) / max(len(samples), 1)}


def srm_arm(pipe: Pipeline, samples: list[Sample]) -> dict:
    """The device SRM's logits for the same samples: the sequential recommender ThinkRec is compared with."""
    from srm_device.scoring import candidate_logits, user_vector

    pipe.srm.eval()
    scores = [float(candidate_logits(pipe.srm, user_vector(pipe.srm, list(s.history)), np.array([s.item]))[0])
              for s in samples]
    return {"scores": scores, "seconds_per_sample": 0.0, "routes": {}}


def run(cfg: PipelineConfig) -> dict:
    pipe = Pipeline(cfg)
    out = pipe.out
    train, test = pipe.samples()
    teacher = make_teacher(cfg.teacher, cfg.teacher_model)
    pipe.keywords(train + test, teacher)
    traces = pipe.traces(train, teacher)
    arms: dict[str, dict] = {"srm": srm_arm(pipe, test), "base": _cached(
        out / "scores_base.json", lambda: score_arm(pipe, pipe.student, test, False, False, None))}
    pipe.drop_student()
    del teacher
    bare_rows = pipe.rows(train, think=False)
    think_rows = {r["id"]: r for r in pipe.rows(train, think=True)}
    trace_rows = [think_rows[i] | {"trace": t} for i, t in traces.items() if i in think_rows]
    bare = pipe.train("bare", bare_rows, cfg.epochs)
    general = pipe.train("general", bare_rows + trace_rows, cfg.epochs)
    experts, clustering = pipe.experts(train, bare_rows + trace_rows, general)
    model = load_model(pipe.assemble(general, experts), cfg.backend, {"bare": bare})  # bare: trained without traces
    suffix = "" if cfg.backend == "transformers" else f"_{cfg.backend}"  # each engine's scores kept apart
    think_users = set(sorted({s.user for s in test})[: cfg.think_users])
    subset = [s for s in test if s.user in think_users]
    plan = {"no_think": (test, False, False, "bare"), "general_no_think": (test, False, False, "general"),
            "experts_no_think": (test, False, True, None), "think": (subset, True, False, "general"),
            "think_experts": (subset, True, True, None)}
    for name, (samples, think, routed, adapter) in plan.items():
        arms[name] = _cached(out / f"scores_{name}{suffix}.json",
                             lambda s=samples, t=think, r=routed, a=adapter: score_arm(pipe, model, s, t, r, a))
    report = pipe.report
    for name, arm in arms.items():
        samples = subset if name.startswith("think") else test
        report[name] = pointwise_report([s.user for s in samples], [s.label for s in samples], arm["scores"]) | {
            "seconds_per_sample": arm["seconds_per_sample"]}
        if not name.startswith("think"):
            idx = [i for i, s in enumerate(samples) if s.user in think_users]
            report[f"{name}@think_users"] = pointwise_report(
                [samples[i].user for i in idx], [samples[i].label for i in idx],
                [arm["scores"][i] for i in idx])
    model.close()
    report["gating"] = dict(Counter(arms["experts_no_think"]["routes"].values()))
    report["backend"] = cfg.backend
    report["clusters"] = report.get("clusters", {"k": clustering.k})
    atomic_write_json(out / "report.json", report)
    return report
