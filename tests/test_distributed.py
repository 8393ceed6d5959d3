"""Training past one process with torchrun (gloo on CPU): the shared epoch loop splits every batch over processes and
takes the step one process would take on the whole batch; `tandem train srm`, `tandem train thinkrec` and `tandem align
adapo` run under `torchrun --nproc_per_node 2` and only rank 0 writes. The torchrun tests are marked ``torchrun``:
`make test-torchrun` runs them (and CI), `make test` leaves them out to stay in its time budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import cyclic_sequences, write_atomic
from tests.live import free_port

ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def _fit(rank: int, world: int, port: int, out: str) -> None:
    """One process of a ``world``-process run (``world`` 1: plain) of fit_epochs on a linear model, MSE over rows."""
    if world > 1:  # a spawned process: its environment goes with it (the one-process run is this pytest process)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
    from tandem.train_state import fit_epochs

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, w_true = torch.randn(103, 5, generator=g), torch.randn(5, 1, generator=g)
    y = x @ w_true + 0.1 * torch.randn(103, 1, generator=g)
    torch.manual_seed(1 + rank)  # different initialisations: rank 0's must win
    model = torch.nn.Linear(5, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    epochs = iter(range(100))

    def validate() -> dict[str, float]:
        next(epochs)
        return {"ndcg@10": 1.0 - float(((model(x) - y) ** 2).mean())}

    fit_epochs(model, opt, lambda idx: ((model(x[idx]) - y[idx]) ** 2).mean(), len(x), validate,
               lambda: None, Path(out) / f"state-{world}", epochs=3, patience=5, batch_size=10, seed=0,
               desc="linear", progress=False)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, Path(out) / f"weights-{world}-{rank}.pt")


def test_two_processes_take_the_one_process_step(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    _fit(0, 1, 0, str(tmp_path))
    mp.spawn(_fit, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    one = torch.load(tmp_path / "weights-1-0.pt")
    for rank in (0, 1):
        two = torch.load(tmp_path / f"weights-2-{rank}.pt")
        for key in one:  # 3 epochs of 11 batches, the last of 3 rows (shares 2 and 1)
            assert torch.allclose(one[key], two[key], atol=1e-5), (key, one[key], two[key])
    assert json.loads((tmp_path / "state-2" / "trainer_state.json").read_text())["next_epoch"] == 3


@pytest.mark.torchrun
@pytest.mark.parametrize("model", ["sasrec", "gru4rec"])
def test_train_srm_runs_under_torchrun(tmp_path: Path, model: str) -> None:
    data = write_atomic(tmp_path / "cyc", cyclic_sequences(n_users=60, n_items=20, length=14))
    args = ["train", "srm", "--model", model, "--dataset", str(data), "--epochs", "3", "--patience", "3",
            "--hidden-size", "16", "--inner-size", "32", "--max-len", "10", "--dropout", "0", "--batch-size", "32"]
    env = {**ENV, "TANDEM_HOME": str(tmp_path / "home")}
    single = subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "pipelines.cli.main", *args,
                           "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "state" / "trainer_state.json").read_text())
    one = json.loads((tmp_path / "one" / "state" / "trainer_state.json").read_text())
    assert two["next_epoch"] == 3 and (tmp_path / "two" / "model.safetensors").is_file()
    assert proc.stderr.count(f"train {model}: epoch") == 3  # one process logs (and writes)
    a, b = one["best_valid"]["ndcg@10"], two["best_valid"]["ndcg@10"]
    assert b > 0.2 and abs(a - b) < 0.15 * a, (a, b)  # the same training, split over two processes
    assert np.isfinite(two["history"][-1]["loss"])


def torchrun(tmp_path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "-m", "pipelines.cli.main", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**ENV, "TANDEM_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.torchrun
def test_thinkrec_training_runs_under_torchrun(tmp_path: Path) -> None:
    """`tandem train thinkrec` (TRL SFTTrainer, LoRA) as two processes: each takes half of every step's examples,
    rank 0 alone writes final/ and the report."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llm_cloud.thinkrec.prompts import rec_prompt
    from tests.test_thinkrec import word_tokenizer

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=512, pad_token_id=0, eos_token_id=1)
    base = tmp_path / "base"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(base)
    word_tokenizer().save_pretrained(base)
    prompt = rec_prompt(["movie w1"], "movie w2")
    rows = [{"id": "a", "prompt": prompt, "label": 1}, {"id": "b", "prompt": prompt, "label": 0,
                                                        "trace": "user liked w1 because w2"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    torchrun(tmp_path, "train", "thinkrec", "--data", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "run"),
             "--model", str(base), "--epochs", "2", "--batch-size", "2", "--lora-r", "4", "--quiet")
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["examples"] == 8 and report["steps"] == 2 * 8 // (2 * 2)  # 2 examples per process, 2 processes
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()


@pytest.mark.torchrun
def test_adapo_runs_under_torchrun(tmp_path: Path) -> None:
    """`tandem align adapo` (TRL GRPOTrainer) as two processes: both score every rollout, so the adaptive weights and
    β agree; rank 0 alone writes the metrics lines, final/ and the report."""
    from alignment.seat.format import self_eval_prompt
    from tests.test_adapo import _tiny_policy, _tokenizer

    tok = _tokenizer()
    question = "What is w1 plus w2"
    _tiny_policy(tmp_path / "model", self_eval_prompt(question), tok)
    tok.save_pretrained(tmp_path / "tokenizer")  # apart: beside a qwen2 config.json it would load as Qwen2's BPE
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": question, "answer": "3"}) + "\n" for _ in range(8)))
    torchrun(tmp_path, "align", "adapo", "--model", str(tmp_path / "model"), "--tokenizer", str(tmp_path / "tokenizer"),
             "--data", str(data), "--out",
             str(tmp_path / "run"), "--steps", "2", "--num-generations", "2", "--per-device-batch", "2",
             "--max-completion-length", "8", "--lr", "0.01", "--seed", "7", "--quiet")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]  # one writer: no step twice
    report = json.loads((tmp_path / "run" / "adapo_report.json").read_text())
    assert report["steps"] == 2 and (tmp_path / "run" / "final").is_dir()
    assert abs(sum(lines[0]["weights"].values()) - 3) < 1e-9
