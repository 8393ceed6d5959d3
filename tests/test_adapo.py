"""AdaPO (arXiv 2508.09155, our design): outcome classification, adaptive sub-task weights, the reward-gap dynamic
KL coefficient, settings validation, and a real 2-step GRPO run on a tiny locally built Qwen2 model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignment.adapo import AdapoConfig, AdaptiveReward, OutcomeWindow, RewardGapKL, classify, subtask_rewards
from alignment.seat.format import compose

GOLD = "12"
RIGHT, WRONG = "Six times two is 12. The answer is 12.", "Six plus two is 8. The answer is 8."
COMPLETIONS = {  # kind -> well-formed completion
    "rr": compose(RIGHT, "The product is right.", "Accept", "12"),
    "wr": compose(WRONG, "It asked for times, not plus.", "Refine", "12"),
    "rw": compose(RIGHT, "I doubt it.", "Refine", "8"),
    "ww": compose(WRONG, "Looks fine.", "Accept", "8"),
}
JUNK = ["", "The answer is 12.", "[self-evaluation-start: x self-evaluation-end] The answer is 12.",
        "[self-evaluation-start: x Evaluation: Maybe self-evaluation-end] 12",
        "[self-evaluation-start: Evaluation: Accept self-evaluation-end]", "\x00 garbage [[["]


def test_outcome_classification_and_window():
    for kind, text in COMPLETIONS.items():
        o = classify(text, GOLD)
        assert (o.kind, o.malformed, o.first_right, o.final_right) == (kind, False, kind[0] == "r", kind[1] == "r")
    assert [classify(COMPLETIONS[k], 12).verdict_right for k in ("rr", "wr", "rw", "ww")] == [True, True, False,
                                                                                             False]
    assert all(classify(j, GOLD).malformed and classify(j, GOLD).kind is None for j in JUNK)
    assert classify(None, GOLD).malformed  # type: ignore[arg-type]
    win = OutcomeWindow(size=8)
    assert win.distribution() == {"rr": 0.25, "wr": 0.25, "rw": 0.25, "ww": 0.25} and win.answer_accuracy == 0.0
    win.push([classify(COMPLETIONS[k], GOLD) for k in ("rr", "rr", "wr", "ww")] + [classify(JUNK[0], GOLD)] * 4)
    assert len(win) == 8 and win.malformed_rate == 0.5
    assert win.distribution() == {"rr": 0.5, "wr": 0.25, "rw": 0.0, "ww": 0.25}
    assert (win.answer_accuracy, win.final_accuracy, win.self_eval_accuracy) == (2 / 8, 3 / 8, 3 / 8)
    win.push(classify(COMPLETIONS["rw"], GOLD))  # the oldest outcome drops out
    assert len(win) == 8 and win.distribution()["rw"] == 0.25 and win.distribution()["rr"] == 0.25
    with pytest.raises(ValueError, match="window size"):
        OutcomeWindow(0)


def test_subtask_rewards():
    assert subtask_rewards(classify(COMPLETIONS["wr"], GOLD)) == {"answer": 0.0, "eval": 1.0, "revision": 1.0}
    assert subtask_rewards(classify(COMPLETIONS["rw"], GOLD)) == {"answer": 1.0, "eval": 0.0, "revision": -1.0}
    assert subtask_rewards(classify(COMPLETIONS["rr"], GOLD)) == {"answer": 1.0, "eval": 1.0, "revision": 0.0}
    assert subtask_rewards(classify(JUNK[1], GOLD)) is None


def _close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a), (a, b)


def test_adaptive_weights_by_hand():
    r = AdaptiveReward(momentum=None)
    # all ww, eval accuracy 0.5: needs answer 1, revision (1 + 0.5)/2 = 0.75, eval 0.5 -> raw 1.1, 0.85, 0.6 (sum 2.55)
    w = r.weights({"rr": 0, "wr": 0, "rw": 0, "ww": 1.0}, eval_accuracy=0.5)
    _close(w, {"answer": 3 * 1.1 / 2.55, "eval": 3 * 0.6 / 2.55, "revision": 3 * 0.85 / 2.55})
    assert w["answer"] > w["eval"] and w["revision"] > w["eval"] and abs(sum(w.values()) - 3) < 1e-9
    # all rr, perfect verdicts: needs answer 0, eval 0, revision (0.5 + 0)/2 = 0.25 -> raw 0.1, 0.1, 0.35 (sum 0.55)
    _close(r.weights({"rr": 1.0, "wr": 0, "rw": 0, "ww": 0}, eval_accuracy=1.0),
           {"answer": 0.3 / 0.55, "eval": 0.3 / 0.55, "revision": 1.05 / 0.55})
    # p = (0.4, 0.1, 0.2, 0.3), eval 0.7: answer 0.4; revision (0.3/0.4 + 0.2/0.6)/2 = 13/24; eval 0.3
    raw = {"answer": 0.5, "eval": 0.4, "revision": 0.1 + 13 / 24}
    _close(r.weights({"rr": 0.4, "wr": 0.1, "rw": 0.2, "ww": 0.3}, eval_accuracy=0.7),
           {k: 3 * v / sum(raw.values()) for k, v in raw.items()})
    _close(AdaptiveReward(adaptive=False).weights({"ww": 1.0}, 0.0), {"answer": 1.0, "eval": 1.0, "revision": 1.0})


def test_reward_function_call_and_ema():
    r = AdaptiveReward(window=16, momentum=0.9)
    assert r.__name__ == "adapo_reward" and AdaptiveReward(adaptive=False).__name__ == "fixed_reward"
    convo = [[{"role": "assistant", "content": COMPLETIONS["ww"]}], [{"role": "assistant", "content": "junk"}]]
    out = r(["p"] * 2, convo, answer=[GOLD, GOLD])
    # window: one ww + one malformed; eval acc 0; p_ww = 1 -> raw 1.1, 1.1, 0.85 (sum 3.05); EMA from (1, 1, 1)
    target = {"answer": 3.3 / 3.05, "eval": 3.3 / 3.05, "revision": 2.55 / 3.05}
    _close(r.current, {k: 0.9 + 0.1 * v for k, v in target.items()})
    assert out == [0.0, -1.0]  # ww earns nothing; malformed gets the format penalty
    s = r.last_stats
    assert s["malformed_rate"] == 0.5 and s["reward_final_right"] is None and r.reward_gap() == 0.0  # none right
    out = r(["p"] * 2, [COMPLETIONS["wr"], COMPLETIONS["rr"]], answer=[GOLD, 12])
    w = r.current
    assert out == pytest.approx([w["eval"] + w["revision"], w["answer"] + w["eval"]])
    fixed = AdaptiveReward(adaptive=False)
    assert fixed(["p"] * 3, [COMPLETIONS["wr"], COMPLETIONS["rw"], "x"], answer=[GOLD] * 3) == [2.0, 0.0, -1.0]
    assert fixed.reward_gap() == pytest.approx(2.0 - (0.0 - 1.0) / 2)
    fixed(["p"], [COMPLETIONS["rr"]], answer=[12])
    assert fixed.reward_gap() is None  # nothing wrong: no gap to measure
    with pytest.raises(ValueError, match="answer"):
        fixed(["p"], ["x"])


def test_reward_gap_kl():
    kl = RewardGapKL(0.04, target_gap=1.0, rate=0.5)
    assert kl.update(0.0) == pytest.approx(0.04 * math.exp(0.5)) and kl.beta > 0.04  # gap below target: grows
    kl = RewardGapKL(0.04, target_gap=1.0, rate=0.5)
    assert kl.update(2.0) == pytest.approx(0.04 * math.exp(-0.5))  # healthy gap: relaxes
    assert kl.update(None) == pytest.approx(0.04 * math.exp(-0.5))  # no gap: unchanged
    kl = RewardGapKL(0.04, beta_min=0.03, beta_max=0.05)
    assert kl.update(-10.0) == 0.05 and kl.update(100.0) == 0.03  # clipped at the bounds
    fixed = RewardGapKL(0.04, fixed=True)
    assert fixed.update(-5.0) == fixed.update(5.0) == 0.04
    for bad in ({"beta0": 0.0}, {"beta0": 0.04, "target_gap": 0}, {"beta0": 0.04, "beta_min": 0.1}):
        with pytest.raises(ValueError, match="must be|need"):
            RewardGapKL(**bad)


def test_config_validation():
    ok = AdapoConfig(model="m", data="d.jsonl")
    ok.validate()
    for change, match in (({"per_device_batch": 6}, "multiple of num_generations.*use e.g. 8"),
                          ({"beta0": 0.0}, "beta0 must be > 0"), ({"num_generations": 1, "per_device_batch": 1},
                                                                  "num_generations must be >= 2"),
                          ({"steps": 0}, "steps must be >= 1"), ({"lora_r": -1}, "lora_r"), ({"model": None}, "model"),
                          ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=match):
            AdapoConfig(**{"model": "m", "data": "d.jsonl", **change}).validate()


VOCAB = ["<pad>", "<eos>", "<unk>", "[self-evaluation-start:", "Evaluation:", "Accept", "Refine",
         "self-evaluation-end]",
         "The", "answer", "is", "3.", "4.", "Problem:", "Solution:", "What", "plus"]
TARGETS = [f"[self-evaluation-start: Evaluation: {v} self-evaluation-end] The answer is {a}"
           for v in ("Accept", "Refine") for a in ("3.", "4.")]  # 8 tokens each: wr/ww with right or wrong verdicts


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    words = VOCAB + [f"w{i}" for i in range(64 - len(VOCAB))]
    backend = Tokenizer(WordLevel(vocab={t: i for i, t in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


_SFT_STEPS = 40


def _tiny_policy(folder: Path, prompt: str, tok) -> None:
    """A tiny Qwen2 briefly fitted to the four TARGETS so GRPO's rollouts are well-formed and differ in reward."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, eos_token_id=1)
    model = AutoModelForCausalLM.from_config(cfg)
    p_ids = tok(prompt)["input_ids"]
    ids = torch.tensor([p_ids + tok(t)["input_ids"] + [1] for t in TARGETS])  # (4, P + 9)
    labels = ids.clone()
    labels[:, :len(p_ids)] = -100  # loss on the completion only
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(_SFT_STEPS):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(folder)


def test_grpo_run_with_adaptive_reward_and_dynamic_kl(tmp_path):
    from alignment.adapo.trainer import plot_metrics, read_metrics, run_adapo
    from alignment.seat.format import self_eval_prompt

    tok = _tokenizer()
    question = "What is w1 plus w2"
    _tiny_policy(tmp_path / "model", self_eval_prompt(question), tok)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": question, "answer": "3"}) + "\n" for _ in range(4)))
    cfg = AdapoConfig(model=str(tmp_path / "model"), data=str(data), out=str(tmp_path / "run"), steps=2,
                      num_generations=2, per_device_batch=2, max_completion_length=8, lr=1e-2, beta0=0.04,
                      kl_target_gap=1.0, seed=7, save_steps=50)
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    summary = run_adapo(cfg, progress=False, tokenizer=tok)
    assert summary["steps"] == 2
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").state_dict()
    lines = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # with seed 7 the rollouts of some step differ in reward, so GRPO's advantages (and the update) are non-zero
    assert any(r["reward_std"] > 0 for r in lines), "no step sampled rollouts of different reward; change the seed"
    assert any(not torch.equal(start[k], after[k]) for k in start), "GRPO changed no parameter"
    assert [r["step"] for r in lines] == [1, 2]
    keys = {"step", "beta", "beta_next", "reward_mean", "subtask_rewards", "weights", "distribution",
            "answer_accuracy", "self_eval_accuracy", "final_accuracy", "malformed_rate", "kl", "reward_gap"}
    assert keys <= lines[0].keys()
    assert abs(sum(lines[0]["weights"].values()) - 3) < 1e-9
    kl = RewardGapKL(0.04, target_gap=1.0, rate=0.5)
    assert lines[0]["beta"] == 0.04
    # β of step 2 moved from beta0 unless step 1's reward gap was undefined (no final-right or no final-wrong rollout)
    assert lines[1]["beta"] != 0.04 or lines[0]["reward_gap"] is None
    for r in lines:  # β follows RewardGapKL from the logged reward gaps
        assert r["beta"] == pytest.approx(kl.beta)
        right, wrong = r["reward_final_right"], r["reward_final_wrong"]
        assert r["reward_gap"] == (None if right is None or wrong is None else pytest.approx(right - wrong))
        assert r["beta_next"] == pytest.approx(kl.update(r["reward_gap"]))
    # resume from checkpoint-2 for one more step: β continues from the logged beta_next, lines are not duplicated
    cfg.steps = 3
    resumed = run_adapo(cfg, progress=False, tokenizer=tok)
    lines = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert resumed["resumed"] and [r["step"] for r in lines] == [1, 2, 3]
    assert lines[2]["beta"] == pytest.approx(lines[1]["beta_next"])
    png = plot_metrics({"adapo": tmp_path / "run"}, tmp_path / "cmp.png")
    assert png.stat().st_size > 0 and not list(tmp_path.glob(".cmp.*"))
