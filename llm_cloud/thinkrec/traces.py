"""Teacher reasoning traces for ThinkRec (arXiv 2505.15091).

ThinkRec teaches a recommender to think before it answers: for the pointwise training samples the student currently
gets wrong, a stronger teacher LLM is shown the recommendation prompt *and the correct answer* and asked for a short
explanation of why that answer holds, grounded in the user's history and the item keywords. The cleaned explanation
becomes the ``<trace>`` part of the student's thinking completion (:func:`llm_cloud.thinkrec.prompts.completion`).

The teacher is anything with the :class:`llm_common.teacher.Teacher` protocol (a local model, or an OpenAI-compatible
``/v1/completions`` server such as ``vllm serve``). :func:`synthesize_traces` appends one JSON record per sample to a
``traces.jsonl`` as each finishes (flushed and fsynced), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llm_cloud.thinkrec.prompts import ANSWER, LABELS, strip_answer
from llm_common.teacher import Teacher, TeacherError
from tandem.errors import TandemError
from tandem.io import JsonlAppender

TRACE_PROMPT = ("{prompt}\n\nThe correct answer is {answer}. In two or three sentences, explain from the user's "
                "history and the movies' keywords why the answer is {answer}. Write only the explanation; do not "
                f"write the final '{ANSWER} ...' line.\n")
MIN_CHARS = 20  # a cleaned trace shorter than this is rejected
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def trace_prompt(prompt: str, label: int) -> str:
    """The teacher's prompt: the recommendation ``prompt``, then the correct answer (``Yes``/``No`` from ``label``)
    and a request for a two-to-three sentence explanation of it."""
    return TRACE_PROMPT.format(prompt=prompt.rstrip(), answer=LABELS[int(label)])


def clean_trace(text: str, max_chars: int = 600) -> str | None:
    """A teacher completion as a trace: cut at the answer line, whitespace collapsed, at most ``max_chars`` (cut at
    the last sentence end within that when there is one). ``None`` when less than :data:`MIN_CHARS` remain."""
    trace = " ".join(strip_answer(text.strip()).split())
    if len(trace) > max_chars:
        head = trace[:max_chars + 1]  # the +1 keeps a sentence end that falls exactly at max_chars
        ends = [m.end() for m in _SENTENCE_END.finditer(head) if m.end() <= max_chars]
        trace = head[:ends[-1]] if ends and ends[-1] >= MIN_CHARS else trace[:max_chars].rstrip()
    return trace if len(trace) >= MIN_CHARS else None


def wrong_rows(rows: list[dict], p_yes: list[float], threshold: float = 0.5) -> list[dict]:
    """The rows (``{id, prompt, label}``) that the student, with yes-probabilities ``p_yes``, gets wrong."""
    if len(rows) != len(p_yes):
        raise ValueError(f"{len(rows)} rows but {len(p_yes)} yes-probabilities; pass one per row")
    return [r for r, p in zip(rows, p_yes) if (p >= threshold) != bool(int(r["label"]))]


def _records(out: Path) -> dict[str, dict[str, Any]]:
    """The latest record per id; an unparsable *last* line (a write cut short) is ignored."""
    latest: dict[str, dict[str, Any]] = {}
    if not out.is_file():
        return latest
    lines = out.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                continue
            raise TandemError(f"{out} line {n} is not JSON; fix or remove that line and rerun") from None
        latest[str(rec["id"])] = rec
    return latest


def read_traces(out: Path) -> dict[str, str]:
    """id → trace for the ``ok`` records of ``out`` (the latest record per id wins)."""
    return {i: r["trace"] for i, r in _records(Path(out)).items() if r.get("ok")}


def _drop_partial_tail(out: Path) -> None:
    """Cut a last line left without its newline by an interrupted write, so new records start on a fresh line."""
    if not out.is_file() or out.stat().st_size == 0:
        return
    data = out.read_bytes()
    if not data.endswith(b"\n"):
        with out.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def synthesize_traces(rows: list[dict], teacher: Teacher, out: Path, max_tokens: int = 128, retries: int = 2,
                      progress: bool = False) -> dict[str, Any]:
    """A greedy teacher trace for each row (``{id, prompt, label}``) without an ``ok`` record in ``out``.

    Each row gets one appended record: ``{id, label, trace, ok: true, seconds, teacher}``, or, after ``retries + 1``
    attempts that each raised :class:`TeacherError` or gave a trace :func:`clean_trace` rejects,
    ``{id, label, ok: false, error, attempts, teacher}``. Returns the run's counts."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_tail(out)
    done = {i for i, r in _records(out).items() if r.get("ok")}
    todo, seen = [], set(done)
    for row in rows:
        if str(row["id"]) not in seen:
            seen.add(str(row["id"]))
            todo.append(row)
    already = sum(str(r["id"]) in done for r in rows)
    ok, failed, seconds = 0, 0, []
    with JsonlAppender(out) as sink:  # cuts a line half-written by a crash first
        for row in tqdm(todo, desc="traces", disable=not progress):
            rid, label = str(row["id"]), int(row["label"])
            prompt = trace_prompt(row["prompt"], label)
            t0, trace, error, attempts = time.perf_counter(), None, "", 0
            while trace is None and attempts <= retries:
                attempts += 1
                try:
                    text = teacher.complete([prompt], n=1, temperature=0.0, max_tokens=max_tokens)[0][0]
                except TeacherError as exc:
                    error = str(exc)
                    continue
                trace = clean_trace(text)
                if trace is None:
                    error = f"trace rejected (empty or under {MIN_CHARS} characters after cleaning): {text[:80]!r}"
            if trace is not None:
                took = round(time.perf_counter() - t0, 3)
                rec = {"id": rid, "label": label, "trace": trace, "ok": True, "seconds": took, "teacher": teacher.name}
                ok += 1
                seconds.append(took)
            else:
                rec = {"id": rid, "label": label, "ok": False, "error": error, "attempts": attempts,
                       "teacher": teacher.name}
                failed += 1
            sink.write(rec)
    return {"requested": len(rows), "already_done": already, "synthesized": ok, "failed": failed,
            "seconds_per_sample": sum(seconds) / len(seconds) if seconds else None, "teacher": teacher.name}
