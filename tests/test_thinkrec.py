"""ThinkRec (arXiv 2505.15091): loss weighting, keyword cache, prompt encoding, samples, metrics, a training step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.pointwise import pointwise_report
from llm_cloud.thinkrec.encode import Encoder
from llm_cloud.thinkrec.keywords import KeywordCache, parse_keywords
from llm_cloud.thinkrec.loss import BARE_WEIGHTS, TRACE_WEIGHTS, thinkrec_loss
from llm_cloud.thinkrec.prompts import completion, rec_prompt

WORDS = ["<pad>", "<eos>", "<unk>", "Answer:", "Yes", "No", "user", "movie", "liked", "target", "because"]


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = WORDS + [f"w{i}" for i in range(32 - len(WORDS))]
    backend = Tokenizer(WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def test_loss_weights_each_example_by_its_alpha_beta():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)  # (B, T, V)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, -100, -100, 5, 1]])
    answer_pos, target = torch.tensor([2, 3]), torch.tensor([1.0, 0.0])
    yes, no = 4, 5
    alpha = torch.tensor([TRACE_WEIGHTS[0], BARE_WEIGHTS[0]])
    beta = torch.tensor([TRACE_WEIGHTS[1], BARE_WEIGHTS[1]])
    loss, parts = thinkrec_loss(logits, labels, answer_pos, target, alpha, beta, yes, no)
    expected = 0.0
    for b in range(2):  # by hand: per-example BCE on ℓ_yes − ℓ_no, mean CE over that example's targets
        z = logits[b, answer_pos[b], yes] - logits[b, answer_pos[b], no]
        bce = F.binary_cross_entropy_with_logits(z, target[b])
        lm = F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=-100)
        expected = expected + alpha[b] * bce + beta[b] * lm
    assert torch.allclose(loss, expected / 2, atol=1e-6)
    assert TRACE_WEIGHTS == (0.1, 0.9) and BARE_WEIGHTS == (0.9, 0.1)
    swapped, _ = thinkrec_loss(logits, labels, answer_pos, target, beta, alpha, yes, no)
    assert not torch.allclose(loss, swapped)  # the weights matter
    loss.backward()
    grad = logits.grad[0, 2]
    assert grad[yes] < 0 < grad[no]  # label 1: raise the yes-logit, lower the no-logit
    assert set(parts) == {"bce", "lm"}


def test_keyword_cache_reuses_and_only_generates_missing(tmp_path: Path):
    calls: list[list[str]] = []

    class Gen:
        name = "stub"

        def generate(self, prompts, max_new_tokens=64):
            calls.append(prompts)
            return ["1. Drama, crime ; Drama\n- heist movie | genre: war", "keywords: space, comedy"] * len(prompts)

    path = tmp_path / "kw.json"
    cache = KeywordCache(path)
    got = cache.ensure([1, 2, 3], lambda i: f"Movie {i}", Gen(), batch_size=2)
    assert cache.generated == 3 and len(calls) == 2
    assert got[1] == ["drama", "crime", "heist movie", "war"] and got[2] == ["space", "comedy"]
    again = KeywordCache(path)  # a new process reads the file
    got2 = again.ensure([2, 3, 4], lambda i: f"Movie {i}", Gen())
    assert again.hits == 2 and again.generated == 1 and len(calls) == 3 and len(calls[-1]) == 1
    assert got2[2] == got[2] and 4 in again
    assert json.loads(path.read_text())["4"]["generator"] == "stub"


def test_parse_keywords_limits_and_cleans():
    text = ", ".join(f"kw{i}" for i in range(15)) + ", a very long phrase that is not a keyword at all"
    kws = parse_keywords(text)
    assert kws == [f"kw{i}" for i in range(10)]
    assert parse_keywords("") == [] and parse_keywords(None) == []


def test_encoder_puts_the_answer_right_after_answer_prefix():
    tok = word_tokenizer()
    enc = Encoder(tok, max_length=200)
    prompt = rec_prompt(["movie w1", "movie w2"], "movie w3")
    for label, trace in ((1, None), (0, "user liked w1 because w2")):
        ex = enc.example(prompt, label, trace)
        ans = ex["input_ids"][ex["answer_pos"] + 1]
        assert ans == (enc.yes_id if label else enc.no_id)
        assert ex["input_ids"][: ex["answer_pos"] + 1] == enc.scoring_ids(prompt, trace)
        n_prompt = len(enc.prompt_ids(prompt))
        assert all(x == -100 for x in ex["labels"][:n_prompt]) and ex["labels"][n_prompt] != -100
    assert completion(1, "because") == "because\nAnswer: Yes" and completion(0) == "Answer: No"
    assert Encoder(tok, max_length=5).example(prompt, 1) is None  # too long: dropped, not truncated


def test_samples_negatives_are_unseen_items():
    from llm_cloud.thinkrec.samples import eval_samples, pick_users, train_samples
    from tandem.data.split import leave_one_out

    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.arange(1, 41), size=12, replace=False) for _ in range(20)]
    split = leave_one_out(seqs)
    users = pick_users(split, 10, seed=0)
    train = train_samples(seqs, split, users, 40, per_user=2, negatives=2, seed=0)
    test = eval_samples(seqs, split.test, users, 40, negatives=4, seed=0)
    assert len(train) == 10 * 2 * 3 and len(test) == 10 * 5
    for s in train + test:
        assert (s.item in seqs[s.user]) == bool(s.label)
    assert len({s.id for s in test}) == len(test)
    for s in test:
        if s.label:
            assert s.item == seqs[s.user][-1]


def test_pointwise_report_by_hand():
    users = [0, 0, 0, 1, 1, 1]
    labels = [1, 0, 0, 1, 0, 0]
    scores = [0.9, 0.1, 0.2, 0.3, 0.5, 0.1]  # user 0: positive first; user 1: positive second
    r = pointwise_report(users, labels, scores, k=5)
    assert r["uauc"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["ndcg@5"] == pytest.approx((1.0 + 1 / np.log2(3)) / 2)
    assert r["auc"] == pytest.approx(7 / 8)  # 8 positive-negative pairs, the 0.3 positive loses to 0.5 only


def test_training_raises_p_yes_on_a_tiny_model(tmp_path: Path):
    """A few ThinkRec steps (TRL SFTTrainer, LoRA) on one positive make its yes-probability go up."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llm_cloud.thinkrec.model import ThinkRecModel
    from llm_cloud.thinkrec.train import ThinkRecTrainConfig, run_train

    tok = word_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=512, pad_token_id=0, eos_token_id=1)
    base = tmp_path / "base"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    prompt = rec_prompt(["movie w1"], "movie w2")
    rows = [{"id": "a", "prompt": prompt, "label": 1}, {"id": "b", "prompt": prompt, "label": 1,
                                                        "trace": "user liked w1 because w2"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    report = run_train(ThinkRecTrainConfig(data=str(tmp_path / "rows.jsonl"), out=str(tmp_path / "run"),
                                           model=str(base), epochs=5, batch_size=4, lr=2e-2, lora_r=4),
                       progress=False)
    assert report["examples"] == 8 and report["trace_examples"] == 4
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()
    from peft import PeftModel

    before = ThinkRecModel(AutoModelForCausalLM.from_pretrained(base), tok, 200, None, [])
    p0 = before.p_yes([prompt], adapter=None)[0]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(tmp_path / "run" / "final"))
    p1 = ThinkRecModel(tuned, tok, 200, None, []).p_yes([prompt], adapter=None)[0]
    assert p1 > max(p0, 0.5) + 0.1, (p0, p1)


def test_negatives_stop_at_what_the_catalogue_has_left():
    from llm_cloud.thinkrec.samples import _negatives

    rng = np.random.default_rng(0)
    assert _negatives(set(range(1, 10)), 10, 4, rng) == [10]  # one unseen item: one negative, no endless loop
    assert _negatives(set(range(1, 11)), 10, 4, rng) == []
