"""Generative recommender over semantic IDs (TIGER, arXiv 2305.05065): tokenizer, training windows, the trie-constrained
beam search (never an invalid or duplicate item), learning a synthetic next-item rule, TRL's handling of our labels,
and the SFT script plus ``tandem eval llm`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.llm import MISS, ranks_from_lists
from llm_cloud.generative.decode import beam_candidates
from llm_cloud.generative.examples import IGNORE, lm_examples
from llm_cloud.generative.model import TinyModelConfig, build_tiny_model
from llm_cloud.generative.prompts import PromptFormat
from llm_cloud.generative.tokens import SemanticIdCodec, build_tokenizer
from llm_cloud.generative.trie import CodeTrie
from tandem.windows import window_bounds
from tests.conftest import cyclic_sequences, write_atomic

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=64)


def random_codes(rng: np.random.Generator, n_items: int) -> np.ndarray:
    """(n_items+1, L+1) unique rows, row 0 = -1, with 1-3 levels of random sizes plus a trailing level."""
    sizes = rng.integers(2, 6, size=int(rng.integers(1, 4)))
    rows: dict[tuple, int] = {}
    table = np.full((n_items + 1, len(sizes) + 1), -1, dtype=np.int64)
    for item in range(1, n_items + 1):
        head = tuple(int(rng.integers(0, s)) for s in sizes)
        table[item] = (*head, rows.get(head, 0))
        rows[head] = rows.get(head, 0) + 1
    return table


def make(codes: np.ndarray, size: TinyModelConfig = TINY, seed: int = 0, max_items: int = 50):
    tok = build_tokenizer(codes)
    fmt = PromptFormat.codes_only(SemanticIdCodec.from_tokenizer(codes, tok))
    return tok, fmt, build_tiny_model(size, tok, fmt.max_length(max_items), seed=seed)


def test_tokenizer_round_trip(tmp_path: Path) -> None:
    codes = np.array([[-1, -1, -1], [12, 3, 0], [12, 3, 1], [0, 1, 0]])
    tok = build_tokenizer(codes)
    codec = SemanticIdCodec.from_tokenizer(codes, tok)
    ids = codec.encode_items(np.array([2, 3]))
    assert tok.convert_ids_to_tokens(ids) == ["<bos>", "<a_12>", "<b_3>", "<c_1>", "<a_0>", "<b_1>", "<c_0>"]
    assert tok("<bos> <a_12> <b_3> <c_1>")["input_ids"] == ids[:4]
    assert [codec.decode_item(codec.item_tokens[i]) for i in (1, 2, 3)] == [1, 2, 3]
    assert codec.decode_item([ids[1], ids[2], ids[2]]) is None
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == tok.get_vocab() and again.pad_token == "<pad>"
    with pytest.raises(ValueError, match="share a code"):
        build_tokenizer(np.array([[-1, -1], [1, 0], [1, 0]]))


def test_windows_train_every_item_once() -> None:
    codes = np.array([[-1, -1]] + [[i % 3, i // 3] for i in range(1, 31)])
    codec = SemanticIdCodec.from_tokenizer(codes, build_tokenizer(codes))
    fmt = PromptFormat.codes_only(codec)
    seq = np.arange(1, 31)
    assert window_bounds(30, 11, 4) == [(0, 11, 0), (4, 15, 11), (8, 19, 15), (12, 23, 19), (16, 27, 23),
                                        (19, 30, 27)]
    ex = lm_examples([seq], fmt, max_items=10, stride=4)
    targets = []
    for ids, lab in zip(ex["input_ids"], ex["labels"]):
        assert len(ids) == len(lab) <= 1 + 11 * 2 and ids[0] == codec.bos_id and lab[0] == IGNORE
        kept = [t for t in lab if t != IGNORE]
        assert kept == ids[len(ids) - len(kept):]  # loss on a suffix of whole items
        targets += [codec.decode_item(kept[i:i + 2]) for i in range(0, len(kept), 2)]
    assert targets == seq.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_trie_beam_search_only_valid_unique_items(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(3, 25))
    codes = random_codes(rng, n_items)
    _, fmt, model = make(codes, seed=seed)
    codec = fmt.codec
    histories = [rng.integers(1, n_items + 1, size=int(rng.integers(1, 8))) for _ in range(5)]
    for n in {1, int(rng.integers(1, n_items + 1)), n_items}:
        for cand in beam_candidates(model, fmt, histories, n=n, batch_size=3):
            assert len(cand.items) == n  # the trie holds >= n items, so n valid beams survive
            assert len(set(cand.items.tolist())) == len(cand.items)
            assert ((cand.items >= 1) & (cand.items <= n_items)).all()
            assert np.isfinite(cand.scores).all() and (np.diff(cand.scores) <= 1e-6).all()
    shared = beam_candidates(model, fmt, histories, n=n_items, batch_size=3)
    unshared = beam_candidates(model, fmt, histories, n=n_items, batch_size=3, share_prompt=False)
    for a, b in zip(shared, unshared):  # the KV cache shared across beams changes nothing
        assert a.items.tolist() == b.items.tolist() and np.allclose(a.scores, b.scores, atol=1e-4)
    trie = CodeTrie(codec.item_tokens, dead_end=codec.eos_id)
    assert trie.allowed((codec.pad_id,)) == [codec.eos_id]


def test_scores_are_summed_log_probs() -> None:
    codes = random_codes(np.random.default_rng(1), 12)
    _, fmt, model = make(codes)
    codec = fmt.codec
    hist = np.array([3, 5, 7])
    cand = beam_candidates(model, fmt, [hist], n=5)[0]
    for item, score in zip(cand.items, cand.scores):
        ids = codec.encode_items(hist) + codec.item_tokens[item].tolist()
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)  # (t, V)
        t = len(ids) - codec.width
        assert sum(logp[t - 1 + k, ids[t + k]].item() for k in range(codec.width)) == pytest.approx(score, abs=1e-4)


def test_tiny_model_learns_next_item_rule() -> None:
    """Item i -> i+1 (mod 20) with hand-made codes (i // 5, i % 5, 0): top-1 right on held-out prefixes."""
    n_items = 20
    codes = np.array([[-1, -1, -1]] + [[i // 5, i % 5, 0] for i in range(n_items)])
    _, fmt, model = make(codes, TinyModelConfig(hidden_size=64, num_heads=2, num_kv_heads=1, num_layers=2,
                                                  intermediate_size=128), max_items=10)
    rng = np.random.default_rng(0)

    def walk(start: int, length: int) -> np.ndarray:
        return (start + np.arange(length)) % n_items + 1

    train = [walk(int(rng.integers(0, n_items)), int(rng.integers(3, 9))) for _ in range(64)]
    ex = lm_examples(train, fmt, max_items=10, stride=5)
    codec = fmt.codec
    width = max(map(len, ex["input_ids"]))
    ids = torch.tensor([r + [codec.pad_id] * (width - len(r)) for r in ex["input_ids"]])  # (b, t)
    labels = torch.tensor([r + [IGNORE] * (width - len(r)) for r in ex["labels"]])  # (b, t)
    mask = (labels != IGNORE) | (ids == codec.bos_id) | (ids != codec.pad_id)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(150):
        loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = [walk(int(rng.integers(0, n_items)), int(rng.integers(2, 8))) for _ in range(20)]
    cands = beam_candidates(model, fmt, held_out, n=3)
    right = np.mean([c.items[0] == h[-1] % n_items + 1 for c, h in zip(cands, held_out)])
    assert right >= 0.8, right


def test_ranks_from_lists() -> None:
    ranks = ranks_from_lists([np.array([4, 2, 9]), np.array([1]), np.array([], dtype=np.int64)], np.array([9, 2, 3]))
    assert ranks.tolist() == [2, MISS, MISS]


def test_trl_uses_our_labels_as_they_are(tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    codes = random_codes(np.random.default_rng(2), 15)
    tok, fmt, model = make(codes, max_items=4)
    seqs = [np.arange(1, 13), np.array([3, 4, 5])]
    ex = lm_examples(seqs, fmt, max_items=4, stride=2)
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False,
                     per_device_train_batch_size=2, max_length=fmt.max_length(4))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(ex), processing_class=tok)
    assert trainer.train_dataset["labels"] == ex["labels"] and trainer.train_dataset["input_ids"] == ex["input_ids"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ex["labels"]))])
    for row, lab in zip(batch["labels"].tolist(), ex["labels"]):
        assert row == lab + [IGNORE] * (len(row) - len(lab))


def run(module: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env={**ENV, "TANDEM_HOME": str(home)}, timeout=300)


def test_sft_script_and_eval_llm(tmp_path: Path) -> None:
    data = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=30, n_items=20, length=12))
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"dataset: {data}\nepochs: 1\nbatch_size: 8\nmax_items: 10\nwindow_stride: 5\n"
                   f"model: {{hidden_size: 64, num_heads: 2, num_kv_heads: 1, num_layers: 1, intermediate_size: 64}}\n"
                   f"output_dir: {tmp_path / 'unused'}\n")
    out, home = tmp_path / "ckpt", tmp_path / "home"
    proc = run("llm_cloud.train.sft", "--config", str(cfg), "--out", str(out), home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"config.json", "model.safetensors", "tokenizer.json", "codes.npy", "tandem_llm.json", "prompt.json",
            "item_counts.npy"} <= {
        p.name for p in out.iterdir()}
    meta = json.loads((out / "tandem_llm.json").read_text())
    assert meta["data_fingerprint"] and meta["dataset"]["dataset"] == str(data)
    assert len(list((home / "sids").iterdir())) == 1  # built once into the cache
    assert not (tmp_path / "unused").exists()
    report = tmp_path / "m.json"
    proc = run("pipelines", "eval", "llm", "--checkpoint", str(out), "--json", str(report), "--n", "20", home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(report.read_text())
    assert set(body) == {"dataset", "model", "split", "metrics", "n_users", "mask_history", "protocol", "n_rows",
                         "metrics_by_user"}
    assert body["protocol"] == "loo" and body["n_rows"] == body["n_users"]
    assert body["n_users"] == 30 and body["metrics"]["hr@20"] == 1.0  # 20 items, 20 beams: every item is listed
    assert {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)} == set(body["metrics"])

    # the device tier reranks the LLM's candidates
    from pipelines.train_srm import train_srm
    from srm_device.models import default_config
    from srm_device.training.config import TrainConfig
    from tandem.data.options import DatasetOptions, load_dataset

    opts = DatasetOptions(dataset=str(data))
    train_srm(load_dataset(opts), opts, "sasrec", default_config("sasrec", hidden_size=16, inner_size=32, max_len=10),
              TrainConfig(epochs=1), tmp_path / "srm", progress=False)
    dev = tmp_path / "dev.json"
    proc = run("pipelines", "eval", "device", "--srm", str(tmp_path / "srm"), "--candidates", f"llm:{out}",
               "--n-candidates", "10", "--json", str(dev), home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(dev.read_text())
    assert body["meta"]["candidates"] == f"llm:{out}" and body["meta"]["n_candidates"] == 10
    assert 0.0 < body["meta"]["fresh_recall@n"] <= 1.0


@pytest.mark.parametrize("text, fragment", [(None, "does not exist"), ("epochs: 1\nlr: 0.1\n", "unknown key 'lr'"),
                                            ("model: {num_heads: 8}\n", "head size"),
                                            ("rastp: {layer: 2}\n", "rastp.layer 2 must be below model.num_layers 2"),
                                            ("profile: gpt\n", "profile: Input should be 'tiny' or 'smollm'")])
def test_sft_bad_config_exits_2(tmp_path: Path, text: str | None, fragment: str) -> None:
    cfg = tmp_path / "bad.yaml"
    if text is not None:
        cfg.write_text(text)
    proc = run("pipelines", "llm", "sft", "--config", str(cfg), home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("tandem: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and fragment in lines[0], proc.stderr


def test_sft_refuses_foreign_out_and_missing_package(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("dataset: ml-100k\nepochs: 1\n")
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run("pipelines", "llm", "sft", "--config", str(cfg), "--out", str(out), home=tmp_path)
    assert proc.returncode == 2 and "is not a generative-recommender checkpoint" in proc.stderr, proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    code = ("import sys; sys.modules['trl'] = None; from pipelines.cli.main import main; "
            f"sys.exit(main(['llm', 'sft', '--config', {str(cfg)!r}, '--out', {str(tmp_path / 'x')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**ENV, "TANDEM_HOME": str(tmp_path)}, timeout=300)
    assert proc.returncode == 2 and "package 'trl' is missing" in proc.stderr, proc.stderr
    smollm = tmp_path / "smollm.yaml"
    smollm.write_text("dataset: ml-100k\nprofile: smollm\nepochs: 1\n")
    code = code.replace("'trl'", "'gguf'").replace(repr(str(cfg)), repr(str(smollm)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**ENV, "TANDEM_HOME": str(tmp_path)}, timeout=300)
    assert proc.returncode == 2 and "`pip install gguf`" in proc.stderr, proc.stderr
    smollm.write_text(f"dataset: ml-100k\nprofile: smollm\nbase_model: {tmp_path / 'nope'}\n")
    proc = run("pipelines", "llm", "sft", "--config", str(smollm), "--out", str(tmp_path / "y"), home=tmp_path)
    assert proc.returncode == 2 and "is not a Hugging Face model folder" in proc.stderr, proc.stderr


def test_eval_llm_refuses_a_folder_that_is_no_checkpoint(tmp_path: Path) -> None:
    proc = run("pipelines", "eval", "llm", "--checkpoint", str(tmp_path), home=tmp_path)
    assert proc.returncode == 2 and "is not a complete generative-recommender checkpoint" in proc.stderr, proc.stderr
