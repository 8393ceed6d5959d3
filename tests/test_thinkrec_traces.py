"""ThinkRec teacher traces (arXiv 2505.15091) through a stand-in OpenAI-compatible ``/v1/completions`` server:
only the student's wrong rows are sent, the teacher sees the label, reruns resume, failures are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_cloud.thinkrec.prompts import rec_prompt
from llm_cloud.thinkrec.traces import clean_trace, read_traces, synthesize_traces, trace_prompt, wrong_rows
from llm_common.teacher import OpenAITeacher
from tandem.errors import TandemError
from tests.live import Live

REPLY = "The user keeps watching space adventures and the target shares those keywords. It fits the pattern."


def _rows() -> list[dict]:
    targets = ["Alien (keywords: space, horror)", "Heat (keywords: crime)", "Up (keywords: family)",
               "Dune (keywords: space, desert)"]
    history = ["Star Wars (keywords: space, adventure)", "Toy Story (keywords: family, toys)"]
    return [{"id": f"u{k}", "prompt": rec_prompt(history, t), "label": k % 2} for k, t in enumerate(targets)]


def _stand_in(fail_on: str | None = None, empty_on: str | None = None):
    """``/v1/completions`` that records every body; HTTP 500 for prompts containing ``fail_on``, an empty completion
    for prompts containing ``empty_on``, :data:`REPLY` plus an answer line otherwise."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI()
    bodies: list[dict] = []

    @app.post("/v1/completions")
    def completions(body: dict):
        bodies.append(body)
        if fail_on and fail_on in body["prompt"]:
            raise HTTPException(500, "boom")
        text = "" if empty_on and empty_on in body["prompt"] else f" {REPLY}\nAnswer: Yes\nmore"
        return {"choices": [{"index": 0, "text": text}]}

    return app, bodies


def test_wrong_rows_and_prompt():
    rows = _rows()  # labels 0, 1, 0, 1
    assert [r["id"] for r in wrong_rows(rows, [0.9, 0.2, 0.1, 0.5])] == ["u0", "u1"]
    assert [r["id"] for r in wrong_rows(rows, [0.9, 0.2, 0.1, 0.5], threshold=0.6)] == ["u0", "u1", "u3"]
    with pytest.raises(ValueError, match="one per row"):
        wrong_rows(rows, [0.5])
    p = trace_prompt(rows[1]["prompt"], 1)
    assert p.startswith(rows[1]["prompt"]) and "The correct answer is Yes." in p and "two or three sentences" in p
    assert "The correct answer is No." in trace_prompt(rows[0]["prompt"], 0)


def test_clean_trace_cuts_the_answer_line_and_length():
    assert clean_trace(f"  {REPLY}\n\nAnswer: No\nextra text") == REPLY
    assert clean_trace("  The   user\n likes   space films a lot.  ") == "The user likes space films a lot."
    assert clean_trace("") is None and clean_trace("Answer: Yes") is None and clean_trace("Too short.") is None
    long = "First sentence is here. Second one is a little longer than that. " * 3
    assert clean_trace(long, max_chars=70) == "First sentence is here. Second one is a little longer than that."
    assert clean_trace("x" * 100, max_chars=50) == "x" * 50  # no sentence end: a hard cut


def test_traces_for_wrong_rows_resume_and_failures(tmp_path: Path):
    rows = _rows()
    wrong = wrong_rows(rows, [0.9, 0.2, 0.1, 0.1])  # u0 (label 0), u1 (label 1), u3 (label 1)
    out = tmp_path / "traces.jsonl"
    app, bodies = _stand_in(fail_on="Heat", empty_on="Dune")
    with Live(app) as live:
        teacher = OpenAITeacher(live.url, "stand-in")
        report = synthesize_traces(wrong, teacher, out, max_tokens=32, retries=2)
        assert report == {"requested": 3, "already_done": 0, "synthesized": 1, "failed": 2,
                          "seconds_per_sample": report["seconds_per_sample"], "teacher": teacher.name}
        assert report["seconds_per_sample"] >= 0
        assert len(bodies) == 1 + 3 + 3  # u0 once, u1 (HTTP 500) and u3 (empty) 1 + retries times each
        assert all(b["temperature"] == 0 and b["n"] == 1 and b["max_tokens"] == 32 for b in bodies)
        sent = {b["prompt"] for b in bodies}
        assert sent == {trace_prompt(r["prompt"], r["label"]) for r in wrong}  # wrong rows only, label shown
        assert any("Alien" in p and "The correct answer is No." in p for p in sent)
        assert any("Heat" in p and "The correct answer is Yes." in p for p in sent)

        recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
        assert recs["u0"]["ok"] and recs["u0"]["trace"] == REPLY and recs["u0"]["label"] == 0
        assert recs["u0"]["teacher"] == teacher.name and recs["u0"]["seconds"] >= 0
        assert not recs["u1"]["ok"] and recs["u1"]["attempts"] == 3 and "HTTP 500" in recs["u1"]["error"]
        assert not recs["u3"]["ok"] and recs["u3"]["attempts"] == 3 and "rejected" in recs["u3"]["error"]
        assert read_traces(out) == {"u0": REPLY}

        n = len(bodies)
        again = synthesize_traces(wrong, teacher, out, retries=0)  # u0 skipped, u1 and u3 retried once each
        assert again["already_done"] == 1 and again["failed"] == 2 and len(bodies) == n + 2
        assert not any("Alien" in b["prompt"] for b in bodies[n:])

    app, bodies = _stand_in()  # the server recovers: the failed rows now succeed, u0 is still not asked again
    with Live(app) as live:
        final = synthesize_traces(wrong, OpenAITeacher(live.url, "stand-in"), out)
    assert final["already_done"] == 1 and final["synthesized"] == 2 and final["failed"] == 0 and len(bodies) == 2
    assert read_traces(out) == {"u0": REPLY, "u1": REPLY, "u3": REPLY}  # latest record per id wins


def test_read_traces_ignores_a_truncated_last_line_and_resume_repairs_it(tmp_path: Path):
    out = tmp_path / "traces.jsonl"
    assert read_traces(out) == {}
    good = {"id": "a", "label": 1, "trace": REPLY, "ok": True, "seconds": 0.1, "teacher": "t"}
    out.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b"})[:30])
    assert read_traces(out) == {"a": REPLY}

    class Echo:
        name = "echo"

        def complete(self, prompts, n=1, temperature=0.0, max_tokens=256):
            return [[REPLY] for _ in prompts]

    report = synthesize_traces([{"id": "a", "prompt": "p", "label": 1}, {"id": "b", "prompt": "q", "label": 0}],
                               Echo(), out, progress=True)
    assert report["already_done"] == 1 and report["synthesized"] == 1
    assert all(json.loads(line) for line in out.read_text().splitlines())  # the cut line was dropped, not merged
    assert read_traces(out) == {"a": REPLY, "b": REPLY}
    out.write_text("{not json\n" + json.dumps(good) + "\n")
    with pytest.raises(TandemError, match="line 1"):
        read_traces(out)
