"""Cas-SEAT data synthesis (arXiv 2501.05662): source filtering, then the teacher's two short cascaded prompts per
problem — chain-of-thought (:func:`~alignment.seat.format.cot_prompt`, ``samples`` completions: the first is the
response, all of them measure self-consistency), then a separate short evaluation prompt on that response
(:func:`~alignment.seat.format.eval_prompt`).

Output folder: ``source.jsonl`` (the problems that passed source filtering), ``source_report.json`` (counts per
source stage) and ``records.jsonl``, one record per problem, appended and flushed as each finishes. A rerun skips
problems that already have an ``ok`` record and retries the rest, so an interrupted run resumes; a problem whose
teacher calls fail ``retries + 1`` times is recorded with ``status: failed`` and its last error.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from alignment.seat.config import SynthConfig
from alignment.seat.format import cot_prompt, eval_prompt, extract_answer
from llm_common.teacher import Teacher, TeacherError, make_teacher
from tandem.errors import TandemError
from tandem.io import JsonlAppender, atomic_write_json, atomic_write_text

RECORDS = "records.jsonl"


def load_source(cfg: SynthConfig) -> list[dict[str, Any]]:
    """Problems ``{id, question, answer, difficulty}`` from ``source_file`` or the reasoning-gym dataset."""
    if cfg.source_file:
        path = Path(cfg.source_file)
        if not path.is_file():
            raise TandemError(f"source_file {path} does not exist; pass a JSONL with a 'question' per line")
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise TandemError(f"source_file {path} line {n} is not JSON; fix or remove it") from None
        return [{"id": str(r.get("id", k)), **r} for k, r in enumerate(rows)]
    try:
        from reasoning_gym import create_dataset
    except ImportError:
        raise TandemError("reasoning-gym is not installed; run `pip install -e .[align]` or pass source_file") from None
    items = create_dataset(cfg.gym_dataset, size=cfg.gym_size, seed=cfg.gym_seed)
    return [{"id": f"{cfg.gym_dataset}-{cfg.gym_seed}-{k}", "question": x["question"], "answer": str(x["answer"]),
             "difficulty": (x.get("metadata") or {}).get("difficulty")} for k, x in enumerate(items)]


def _norm(question: str) -> str:
    return re.sub(r"\W+", " ", question.lower()).strip()


def source_filter(rows: list[dict[str, Any]], cfg: SynthConfig) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Source-level filtering, in order: format (a non-empty question; a gold answer, if any, is a number),
    length, deduplication (case/punctuation-insensitive question text), difficulty range. Returns the kept rows
    and the count left after each stage."""
    counts = {"input": len(rows)}

    def numeric(a: Any) -> bool:
        return a is None or extract_answer(f"The answer is {a}") is not None

    rows = [r for r in rows
            if isinstance(r.get("question"), str) and r["question"].strip() and numeric(r.get("answer"))]
    counts["format"] = len(rows)
    rows = [r for r in rows if len(r["question"]) <= cfg.max_question_chars]
    counts["length"] = len(rows)
    seen: set[str] = set()
    unique = []
    for r in rows:
        key = _norm(r["question"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    counts["dedup"] = len(unique)
    rows = [r for r in unique if r.get("difficulty") is None
            or cfg.min_difficulty <= float(r["difficulty"]) <= cfg.max_difficulty]
    counts["difficulty"] = len(rows)
    return rows, counts


def synthesize_one(teacher: Teacher, row: dict[str, Any], cfg: SynthConfig) -> dict[str, Any]:
    """One problem through the cascade: CoT samples, then the evaluation of the first one."""
    q = row["question"]
    first = teacher.complete([cot_prompt(q)], n=1, temperature=0.0, max_tokens=cfg.max_tokens)[0]
    extra = (teacher.complete([cot_prompt(q)], n=cfg.samples - 1, temperature=cfg.temperature,
                              max_tokens=cfg.max_tokens)[0] if cfg.samples > 1 else [])
    response = first[0]
    evaluation = teacher.complete([eval_prompt(q, response)], n=1, temperature=0.0, max_tokens=cfg.max_tokens)[0][0]
    return {"response": response, "samples": [response, *extra],
            "sample_answers": [extract_answer(t) for t in [response, *extra]], "evaluation": evaluation}


def _done_ids(path: Path) -> set[str]:
    done = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that problem is simply redone
                continue
            if rec.get("status") == "ok":
                done.add(rec["id"])
    return done


def run_synthesize(cfg: SynthConfig, teacher: Teacher | None = None, progress: bool = True) -> dict[str, Any]:
    """Source-filter, then synthesise every problem without an ``ok`` record; returns the report."""
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, counts = source_filter(load_source(cfg), cfg)
    atomic_write_text(out / "source.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(out / "source_report.json", counts)
    path = out / RECORDS
    done = _done_ids(path)
    todo = [r for r in rows if r["id"] not in done]
    teacher = teacher if teacher is not None else make_teacher(cfg.teacher, cfg.teacher_model)
    ok = failed = 0
    seconds: list[float] = []
    with JsonlAppender(path) as sink:  # cuts a line half-written by a crash first
        for row in tqdm(todo, desc="synthesize", disable=not progress):
            rec: dict[str, Any] = {"id": row["id"], "question": row["question"], "gold": row.get("answer"),
                                   "teacher": teacher.name}
            t0 = time.perf_counter()
            for attempt in range(cfg.retries + 1):
                try:
                    rec.update(synthesize_one(teacher, row, cfg), status="ok", attempts=attempt + 1)
                    break
                except TeacherError as exc:
                    rec.update(status="failed", attempts=attempt + 1, error=str(exc))
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            if rec["status"] == "ok":
                ok += 1
                seconds.append(rec["seconds"])
            else:
                failed += 1
            sink.write(rec)
    report = {"source": counts, "already_done": len(done), "synthesized": ok, "failed": failed,
              "seconds_per_problem": (sum(seconds) / len(seconds)) if seconds else None, "teacher": teacher.name}
    atomic_write_json(out / "synth_report.json", report)
    return report
