"""Cas-SEAT: the prompt cascade and its format, source and labelled filtering, resumable synthesis with a teacher
(a scripted one, and an OpenAI-compatible stand-in server on 127.0.0.1), the data mix, and TRL SFT on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.seat.config import FilterConfig, SeatSFTConfig, SynthConfig, from_mapping
from alignment.seat.filter import run_filter
from alignment.seat.format import (
    compose,
    cot_prompt,
    eval_prompt,
    extract_answer,
    parse,
    parse_problem,
    verdict_of,
)
from alignment.seat.sft import mix
from alignment.seat.synthesize import RECORDS, run_synthesize, source_filter
from llm_common.teacher import OpenAITeacher, TeacherError
from tandem.errors import TandemError
from tests.live import Live


def test_compose_and_parse_round_trip():
    text = compose("3 + 4 = 7. The answer is 7.", "The sum is right.", "Accept", "7")
    assert text.endswith("[self-evaluation-start: The sum is right. Evaluation: Accept self-evaluation-end] "
                         "The answer is 7.")
    got = parse(text)
    assert (got.first_answer, got.verdict, got.final_answer, got.critique) == ("7", "Accept", "7", "The sum is right.")
    refine = parse(compose("2 * 6 = 13. The answer is 13.", "2 * 6 is 12.", "Refine", "12"))
    assert (refine.first_answer, refine.verdict, refine.final_answer) == ("13", "Refine", "12")
    assert extract_answer("so The answer is 1,234. and later the answer is -5.5") == "-5.5"
    assert extract_answer("no number here") is None


@pytest.mark.parametrize("text, problem", [
    ("The answer is 3.", "no_block"),
    ("x [self-evaluation-start: ok Evaluation: Accept self-evaluation-end] The answer is 3. "
     "[self-evaluation-start: again", "block_count"),
    ("x [self-evaluation-start: looks fine self-evaluation-end] The answer is 3.", "no_verdict"),
    ("x [self-evaluation-start: fine Evaluation: Maybe self-evaluation-end] The answer is 3.", "bad_verdict"),
    ("x [self-evaluation-start: fine Evaluation: Accept self-evaluation-end] done.", "no_final_answer"),
    ("", "no_block"),
])
def test_malformed_outputs_are_reported_not_raised(text, problem):
    assert parse_problem(text) == problem
    assert parse(text) is None


def test_cascade_prompts_and_verdicts():
    assert "Problem: q?" in cot_prompt("q?") and "The answer is N." in cot_prompt("q?")
    assert "Proposed solution: r." in eval_prompt("q?", "r.")
    assert verdict_of("Looks right. Evaluation: Accept. The answer is 2.") == "Accept"
    assert verdict_of("Evaluation: Accept ... Evaluation: Refine") is None  # both: no verdict
    assert verdict_of("no verdict") is None


def test_source_filter_counts_each_stage():
    rows = [{"id": "1", "question": "What is 2 + 2?", "answer": "4", "difficulty": 1},
            {"id": "2", "question": "what is 2+2 ?", "answer": "4", "difficulty": 1},  # duplicate of 1
            {"id": "3", "question": "", "answer": "4"},  # format
            {"id": "4", "question": "Q?", "answer": "four"},  # format: gold is not a number
            {"id": "5", "question": "x" * 50, "answer": "1"},  # length
            {"id": "6", "question": "Hard one?", "answer": "9", "difficulty": 5},  # difficulty
            {"id": "7", "question": "No gold?", "difficulty": None}]
    kept, counts = source_filter(rows, SynthConfig(max_question_chars=40, max_difficulty=3))
    assert counts == {"input": 7, "format": 5, "length": 4, "dedup": 3, "difficulty": 2}
    assert [r["id"] for r in kept] == ["1", "7"]


class ScriptedTeacher:
    """Answers 2+2-style problems: the CoT says ``first``, the evaluation says ``verdict`` and ``final``."""

    name = "scripted"

    def __init__(self, script: dict[str, tuple[str, str, str]], fail_times: dict[str, int] | None = None) -> None:
        self.script, self.fail = script, dict(fail_times or {})
        self.calls = 0

    def complete(self, prompts, n=1, temperature=0.0, max_tokens=256):
        self.calls += 1
        out = []
        for p in prompts:
            key = next(k for k in self.script if k in p)
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise TeacherError(f"scripted failure on {key}")
            first, verdict, final = self.script[key]
            if p.startswith("Problem:"):  # the evaluation prompt
                out.append([f"Checked. Evaluation: {verdict}. The answer is {final}."] * n)
            else:
                out.append([f"Work. The answer is {first}."] * n)
        return out


def _source(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "source.in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_synthesis_resumes_retries_and_records_failures(tmp_path):
    rows = [{"id": "a", "question": "alpha?", "answer": "4"}, {"id": "b", "question": "beta?", "answer": "5"},
            {"id": "c", "question": "gamma?", "answer": "6"}]
    cfg = SynthConfig(out=str(tmp_path / "s"), source_file=_source(tmp_path, rows), samples=2, temperature=0.5,
                      retries=1)
    script = {"alpha": ("4", "Accept", "4"), "beta": ("3", "Refine", "5"), "gamma": ("6", "Accept", "6")}
    teacher = ScriptedTeacher(script, fail_times={"beta": 1, "gamma": 5})  # beta: retried once; gamma: fails
    report = run_synthesize(cfg, teacher=teacher, progress=False)
    assert (report["synthesized"], report["failed"]) == (2, 1)
    recs = [json.loads(line) for line in (tmp_path / "s" / RECORDS).read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    assert by_id["b"]["attempts"] == 2 and by_id["b"]["sample_answers"] == ["3", "3"]
    assert by_id["c"]["status"] == "failed" and "scripted failure" in by_id["c"]["error"]
    calls = teacher.calls
    again = run_synthesize(cfg, teacher=ScriptedTeacher(script), progress=False)  # resume: only gamma is redone
    assert (again["already_done"], again["synthesized"], again["failed"]) == (2, 1, 0)
    assert calls > 0

    rep = run_filter(FilterConfig(records=str(tmp_path / "s")))
    assert rep["labelled"]["consistency"] == 3 and rep["verdicts"] == {"Accept": 2, "Refine": 1}
    assert rep["cot_examples"] == 2  # beta's first answer (3) is wrong
    selfeval = [json.loads(line) for line in (tmp_path / "s" / "selfeval.jsonl").read_text().splitlines()]
    parsed = {r["id"]: parse(r["completion"][0]["content"]) for r in selfeval}
    assert (parsed["b"].first_answer, parsed["b"].verdict, parsed["b"].final_answer) == ("3", "Refine", "5")
    assert rep["source"]["input"] == 3


def test_labelled_filter_drops_each_kind_of_bad_record(tmp_path):
    def rec(i, response, evaluation, gold="4", answers=("4", "4")):
        return {"id": str(i), "question": f"q{i}?", "gold": gold, "status": "ok", "response": response,
                "evaluation": evaluation, "sample_answers": list(answers)}

    good = ("Work. The answer is 4.", "Fine. Evaluation: Accept. The answer is 4.")
    records = [
        {"id": "0", "question": "q0?", "status": "failed"},  # ok
        rec(1, "no answer", good[1]),  # format
        rec(2, "x" * 30 + " The answer is 4.", good[1]),  # length
        rec(3, *good, gold=None, answers=("4", "4")),  # gold (require_gold)
        rec(4, "Work. The answer is 5.", "Fine. Evaluation: Accept. The answer is 5."),  # correctness: wrong accept
        rec(5, *good, answers=("4", "7", "8")),  # consistency: 1/3
        rec(6, *good),  # passes
    ]
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in records))
    rep = run_filter(FilterConfig(records=str(folder), max_response_chars=25, require_gold=True))
    assert rep["labelled"] == {"input": 7, "ok": 6, "format": 5, "length": 4, "gold": 3, "correctness": 2,
                               "consistency": 1}
    assert rep["selfeval_examples"] == 1 and rep["cot_examples"] == 2  # records 5 and 6 have right first answers


def test_mix_ratio_and_refusal():
    cot = [{"id": f"c{i}"} for i in range(6)]
    se = [{"id": f"s{i}"} for i in range(3)]
    rows = mix(cot, se, 0.5, 0, seed=0)
    assert len(rows) == 6 and sum(r["kind"] == "cot" for r in rows) == 3
    assert sum(r["kind"] == "cot" for r in mix(cot, se, 0.25, 4, seed=1)) == 1
    assert all(r["kind"] == "cot" for r in mix(cot, se, 1.0, 0, seed=0))
    with pytest.raises(TandemError, match="cannot draw"):
        mix(cot, se, 0.5, 10, seed=0)


def test_config_from_yaml_mapping_refuses_bad_keys_and_values():
    assert from_mapping(SeatSFTConfig, {"cot_ratio": 0.3}, "sft config").cot_ratio == 0.3
    with pytest.raises(TandemError, match="unknown key 'ratio'"):
        from_mapping(SeatSFTConfig, {"ratio": 0.3}, "sft config")
    with pytest.raises(TandemError, match="cot_ratio must be in"):
        from_mapping(SeatSFTConfig, {"cot_ratio": 2}, "sft config")
    with pytest.raises(TandemError, match="temperature 0"):
        from_mapping(SynthConfig, {"samples": 3, "temperature": 0}, "synth config")


def _stand_in_app(fail_first: int = 0):
    """A minimal OpenAI-compatible ``/v1/completions`` server: echoes a fixed answer per prompt."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI()
    state = {"fail": fail_first, "bodies": []}

    @app.post("/v1/completions")
    def completions(body: dict):
        state["bodies"].append(body)
        if state["fail"] > 0:
            state["fail"] -= 1
            raise HTTPException(503, "busy")
        text = ("Checked. Evaluation: Accept. The answer is 4." if body["prompt"].startswith("Problem:")
                else "2 + 2 = 4. The answer is 4.")
        return {"choices": [{"index": i, "text": " " + text} for i in range(body.get("n", 1))]}

    return app, state


def test_openai_teacher_against_a_local_stand_in_server(tmp_path):
    app, state = _stand_in_app(fail_first=1)
    with Live(app) as live:
        teacher = OpenAITeacher(live.url, "stand-in")
        with pytest.raises(TeacherError, match="HTTP 503"):
            teacher.complete(["q"])
        assert teacher.complete(["q"], n=2, temperature=0.7) == [["2 + 2 = 4. The answer is 4."] * 2]
        cfg = SynthConfig(out=str(tmp_path / "s"), source_file=_source(tmp_path, [{"question": "2+2?", "answer": 4}]),
                          samples=1, teacher=live.url, teacher_model="stand-in")
        from llm_common.teacher import make_teacher

        report = run_synthesize(cfg, teacher=make_teacher(cfg.teacher, cfg.teacher_model), progress=False)
    assert report["synthesized"] == 1
    assert state["bodies"][-1]["model"] == "stand-in" and state["bodies"][-1]["prompt"].startswith("Problem:")


def test_sft_trains_a_tiny_model_on_the_mix(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config

    from alignment.seat.sft import run_sft
    from tests.test_merging_calibration import _tokenizer

    tok = _tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}{% endif %}")
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "student")
    data = tmp_path / "data"
    data.mkdir()
    row = {"prompt": [{"role": "user", "content": "w1 w2 w3"}], "completion": [{"role": "assistant", "content": "w4"}]}
    (data / "cot.jsonl").write_text("".join(json.dumps({**row, "id": str(i)}) + "\n" for i in range(4)))
    (data / "selfeval.jsonl").write_text("".join(json.dumps({**row, "id": f"s{i}"}) + "\n" for i in range(4)))
    cfg = SeatSFTConfig(data=str(data), out=str(tmp_path / "out"), model=str(tmp_path / "student"), lora_r=0,
                        batch_size=2, epochs=1, lr=1e-2, max_length=32)
    report = run_sft(cfg, progress=False, tokenizer=tok)
    assert report["mix"] == {"cot": 4, "selfeval": 4} and report["steps"] == 4
    assert report["final_loss"] is not None and report["final_loss"] < report["first_loss"]
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


def test_evaluate_student_on_a_tiny_model():
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from alignment.evaluate import evaluate_student, forced_p_accept

    words = ["<pad>", "<eos>", "<unk>", "Accept", "Refine", "The", "answer", "is", "4.", "Evaluation:",
             "[self-evaluation-start:", "self-evaluation-end]", "Problem:", "What", "2+2?"]
    backend = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256)).eval()
    res = evaluate_student(model, tok, [{"question": "What is 2+2?", "answer": "4"}] * 2, max_tokens=6)
    assert res["n"] == 2 and 0.0 <= res["malformed_rate"] <= 1.0
    assert res["forced_auroc"] is None  # both problems alike: one class only
    p = forced_p_accept(model, tok, "Problem: What is 2+2?", "The answer is 4.")
    assert 0.0 < p < 1.0 and p != 0.5  # " Accept" and " Refine" are distinct tokens with different logits
    assert res["rows"][0]["p_accept"] == res["rows"][1]["p_accept"]  # greedy and deterministic


def test_align_cli_filter_and_refusals(tmp_path, capsys):
    from pipelines.cli.main import main

    folder = tmp_path / "r"
    folder.mkdir()
    rec = {"id": "1", "question": "q?", "gold": "4", "status": "ok", "response": "Work. The answer is 4.",
           "evaluation": "Fine. Evaluation: Accept. The answer is 4.", "sample_answers": ["4"]}
    (folder / RECORDS).write_text(json.dumps(rec) + "\n")
    assert main(["align", "filter", "--records", str(folder), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["selfeval_examples"] == 1
    assert (folder / "selfeval.jsonl").is_file() and (folder / "filter_report.json").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("records: x\nthreshold: 2\n")
    assert main(["align", "filter", "--config", str(bad)]) == 2
    assert "unknown key 'threshold'" in capsys.readouterr().err
    assert main(["align", "filter", "--config", str(bad), "--records", "y"]) == 2
    assert main(["align", "sft", "--cot-ratio", "3"]) == 2
    assert "cot_ratio must be in [0, 1]" in capsys.readouterr().err
    assert main(["align", "adapo", "--data", str(tmp_path / "none.jsonl"), "--quiet"]) == 2
    assert "model must be set" in capsys.readouterr().err
    assert main(["align", "adapo", "--model", str(tmp_path), "--data", str(tmp_path / "none.jsonl"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
