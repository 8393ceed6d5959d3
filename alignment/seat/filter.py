"""Cas-SEAT's second filtering level (arXiv 2501.05662): labelled-data filtering of the synthesised records, then
the two training sets in TRL's conversational prompt–completion format.

Stages, in order (the report counts what is left after each; the first level, source filtering, ran in
:mod:`alignment.seat.synthesize` and its counts are carried into the same report):

1. ``ok``: the teacher answered (synthesis did not fail);
2. ``format``: the response ends on an answer, the evaluation gives exactly one verdict and a final answer;
3. ``length``: the response is at most ``max_response_chars``;
4. ``gold``: with ``require_gold``, the problem has a gold answer;
5. ``correctness``: where gold is known, the final answer equals it and the verdict is right (Accept iff the first
   answer equals gold); without gold, the final answer must be the majority answer of the teacher's CoT samples
   (the pseudo-label) and an Accept must keep the first answer;
6. ``consistency``: the teacher is stable on the problem — at least ``min_consistency`` of its CoT samples give the
   majority answer (a problem the teacher answers differently every time yields noisy labels).

``selfeval.jsonl`` holds the records that pass all six: prompt :func:`~alignment.seat.format.self_eval_prompt`,
completion :func:`~alignment.seat.format.compose` (response, critique, verdict, final answer). ``cot.jsonl`` holds the
chain-of-thought examples: records through stage 4 whose first response is right (equal to gold, or, without gold,
the samples' majority answer held by at least ``min_consistency`` of them), with prompt
:func:`~alignment.seat.format.cot_prompt`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignment.seat.config import FilterConfig
from alignment.seat.format import (
    answers_match,
    compose,
    cot_prompt,
    extract_answer,
    self_eval_prompt,
    verdict_of,
)
from alignment.seat.synthesize import RECORDS
from tandem.errors import TandemError
from tandem.io import atomic_write_json, atomic_write_text

STAGES = ("ok", "format", "length", "gold", "correctness", "consistency")


def read_records(folder: Path) -> list[dict[str, Any]]:
    path = folder / RECORDS
    if not path.is_file():
        raise TandemError(f"{path} does not exist; run `tandem align synthesize` into {folder} first")
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if rec.get("status") == "ok" or rec.get("id") not in latest:
            latest[rec["id"]] = rec  # an ok record wins over earlier failed attempts
    return list(latest.values())


def critique_of(evaluation: str) -> str:
    """The teacher's evaluation text before its verdict."""
    return evaluation.split("Evaluation:")[0].strip()


def majority(rec: dict[str, Any]) -> tuple[str | None, float]:
    """The most common answer of the teacher's CoT samples and its share (None, 0.0 without answers)."""
    answers = [a for a in rec.get("sample_answers") or [] if a is not None]
    if not answers:
        return None, 0.0
    best = max(answers, key=lambda a: sum(answers_match(a, b) for b in answers))
    return best, sum(answers_match(best, b) for b in answers) / len(rec["sample_answers"])


def _stage(rec: dict[str, Any], cfg: FilterConfig) -> tuple[str | None, dict[str, Any]]:
    """The first stage ``rec`` fails (None: it passes all) and its parsed fields."""
    if rec.get("status") != "ok":
        return "ok", {}
    first = extract_answer(rec["response"])
    verdict = verdict_of(rec["evaluation"])
    final = extract_answer(rec["evaluation"].split("Evaluation:")[-1])
    fields = {"first": first, "verdict": verdict, "final": final}
    if first is None or verdict is None or final is None:
        return "format", fields
    if len(rec["response"]) > cfg.max_response_chars:
        return "length", fields
    gold = rec.get("gold")
    if cfg.require_gold and gold is None:
        return "gold", fields
    if gold is not None:
        right_verdict = (verdict == "Accept") == answers_match(first, gold)
        if not (answers_match(final, gold) and right_verdict):
            return "correctness", fields
    elif not answers_match(final, majority(rec)[0]) or (verdict == "Accept" and not answers_match(final, first)):
        return "correctness", fields
    if majority(rec)[1] < cfg.min_consistency:
        return "consistency", fields
    return None, fields


def _cot_ok(rec: dict[str, Any], first: str | None, cfg: FilterConfig) -> bool:
    gold = rec.get("gold")
    if gold is not None:
        return answers_match(first, gold)
    top, share = majority(rec)
    return answers_match(first, top) and share >= cfg.min_consistency


def run_filter(cfg: FilterConfig, progress: bool = False) -> dict[str, Any]:
    """Filter ``cfg.records``'s records; write cot.jsonl, selfeval.jsonl and filter_report.json; return the report
    (``progress`` is accepted for the CLI; filtering is instant)."""
    cfg.validate()
    folder = Path(cfg.records)
    out = Path(cfg.out) if cfg.out else folder
    out.mkdir(parents=True, exist_ok=True)
    records = read_records(folder)
    left = {"input": len(records), **{s: 0 for s in STAGES}}
    cot, selfeval, verdicts = [], [], {"Accept": 0, "Refine": 0}
    for rec in records:
        failed, f = _stage(rec, cfg)
        passed = STAGES if failed is None else STAGES[:STAGES.index(failed)]
        for s in passed:
            left[s] += 1
        if "gold" in passed and _cot_ok(rec, f["first"], cfg):
            cot.append({"id": rec["id"], "prompt": [{"role": "user", "content": cot_prompt(rec["question"])}],
                        "completion": [{"role": "assistant", "content": rec["response"]}]})
        if failed is None:
            target = compose(rec["response"], critique_of(rec["evaluation"]), f["verdict"], f["final"])
            selfeval.append({"id": rec["id"], "verdict": f["verdict"],
                             "prompt": [{"role": "user", "content": self_eval_prompt(rec["question"])}],
                             "completion": [{"role": "assistant", "content": target}]})
            verdicts[f["verdict"]] += 1
    atomic_write_text(out / "cot.jsonl", "".join(json.dumps(r) + "\n" for r in cot))
    atomic_write_text(out / "selfeval.jsonl", "".join(json.dumps(r) + "\n" for r in selfeval))
    source = folder / "source_report.json"
    report = {"source": json.loads(source.read_text()) if source.is_file() else None, "labelled": left,
              "cot_examples": len(cot), "selfeval_examples": len(selfeval), "verdicts": verdicts}
    atomic_write_json(out / "filter_report.json", report)
    return report
