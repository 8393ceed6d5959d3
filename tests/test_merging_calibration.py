"""Calibration-driven merging: CKI's learned local term and CAPS's gradient×weight attribution and CKA report on a
tiny Qwen2 base with a word-level tokenizer and real PEFT adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llm_common.adapters import load_adapter, module_delta
from merging.calibration import DeltaModel, read_examples
from merging.config import make_config
from merging.run import REPORT_NAME, run_merge
from pipelines.cli.main import main
from tandem.errors import TandemError
from tests.test_merging_adapters import _make_adapter

WORDS = [f"w{i}" for i in range(56)]


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>", *WORDS])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, Qwen2Config

    root = tmp_path_factory.mktemp("calib")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(root / "base")
    _tokenizer().save_pretrained(root / "base")
    qv = ["q_proj", "v_proj"]
    # task a: count up by one; task b: repeat the last word
    task_a = [(" ".join(WORDS[i:i + 4]), WORDS[i + 4]) for i in range(0, 16)]
    task_b = [(" ".join(WORDS[20 + i:24 + i]), WORDS[23 + i]) for i in range(0, 16)]
    return {"root": root, "base": root / "base",
            "a": _make_adapter(root / "base", root / "a", 1, qv, r=4, lora_alpha=8),
            "b": _make_adapter(root / "base", root / "b", 2, qv, r=4, lora_alpha=8),
            "calib_a": _jsonl(root / "calib_a.jsonl", task_a), "calib_b": _jsonl(root / "calib_b.jsonl", task_b)}


def _cfg(lab, out: Path, method: str, per_adapter: bool = True, **extra):
    adapters = [{"path": str(lab[k]), "weight": 0.5, **({"calibration": str(lab[f"calib_{k}"])} if per_adapter else {})}
                for k in ("a", "b")]
    return make_config({"adapters": adapters, "method": method, "out": str(out), **extra})


def test_read_examples_refuses_bad_files(tmp_path):
    good = _jsonl(tmp_path / "ok.jsonl", [("w1 w2", "w3"), ("w4", "w5")])
    assert read_examples(good, limit=1) == [("w1 w2", "w3")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "w1"}\n')
    with pytest.raises(TandemError, match="line 1"):
        read_examples(bad)
    with pytest.raises(TandemError, match="does not exist"):
        read_examples(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TandemError, match="no examples"):
        read_examples(tmp_path / "empty.jsonl")


def test_attribution_is_gradient_times_update(lab):
    """DeltaModel's functional_call path equals putting W + ΔW into the model and differentiating by hand."""
    adapter = load_adapter(lab["a"])
    deltas = {m: module_delta(adapter, m) for m in adapter.modules}
    examples = read_examples(lab["calib_a"])
    dm = DeltaModel(lab["base"], adapter.modules, batch_size=len(examples))  # one batch: mean of one term
    got = dm.attribution(deltas, examples)

    from merging.calibration import token_nll

    model = dm.model
    weights = {m: model.get_submodule(m).weight for m in adapter.modules}
    saved = {m: w.detach().clone() for m, w in weights.items()}
    try:
        with torch.no_grad():
            for m, w in weights.items():
                w.add_(deltas[m])
                w.requires_grad_(True)
        nll, cnt = token_nll(model, dm.tok, examples)
        grads = torch.autograd.grad(nll.sum() / cnt.sum(), list(weights.values()))
    finally:
        with torch.no_grad():
            for m, w in weights.items():
                w.copy_(saved[m])
                w.requires_grad_(False)
    for (m, d), g in zip(deltas.items(), grads):
        assert torch.allclose(got[m], (g * d).abs(), atol=1e-7), m
    assert all(float(a.sum()) > 0 for a in got.values())


def test_delta_activations_cka_is_one_for_identical_experts(lab):
    from merging.methods.caps import compatibility_report

    adapter = load_adapter(lab["a"])
    deltas = {m: module_delta(adapter, m) for m in adapter.modules}
    dm = DeltaModel(lab["base"], adapter.modules, batch_size=4)
    acts = dm.delta_activations(deltas, read_examples(lab["calib_a"]))
    assert all(a.shape == (16, deltas[m].shape[0]) for m, a in acts.items())
    report = compatibility_report({"x": acts, "y": {m: 3.0 * a for m, a in acts.items()}})
    assert all(v["x|y"] == pytest.approx(1.0, abs=1e-6) for v in report.values())


def test_caps_with_calibration_uses_attribution_and_cka(lab, tmp_path):
    report = run_merge(_cfg(lab, tmp_path / "caps", "caps", parameters={"cka_threshold": 0.0}), progress=False)
    side = report["side_information"]
    assert side["attribution"].startswith("gradient x weight")
    assert side["calibration"]["examples_per_adapter"] == [16, 16]
    cka = side["cka"]["per_module"]
    assert set(cka) == set(load_adapter(lab["a"]).modules) and all(0.0 <= v <= 1.0 + 1e-9 for v in cka.values())
    magnitude = run_merge(_cfg(lab, tmp_path / "caps_mag", "caps", per_adapter=False), progress=False)
    assert magnitude["side_information"]["attribution"] == "magnitude |dW|"
    merged = load_adapter(tmp_path / "caps").B
    assert any(not torch.allclose(merged[m], load_adapter(tmp_path / "caps_mag").B[m]) for m in merged)
    # a threshold above every module's CKA averages every module instead of splicing: the linear merge
    avg = run_merge(_cfg(lab, tmp_path / "caps_avg", "caps", parameters={"cka_threshold": 1.01}), progress=False)
    lin = run_merge(_cfg(lab, tmp_path / "lin", "linear"), progress=False)
    assert avg["reconstruction_error"]["mean"] == pytest.approx(lin["reconstruction_error"]["mean"], abs=1e-6)
    assert lin["side_information"]["calibration"].startswith("unused")


def test_cki_learned_local_term_lowers_the_calibration_loss(lab, tmp_path):
    shared = _jsonl(tmp_path / "shared.jsonl", [*read_examples(lab["calib_a"])[:4], *read_examples(lab["calib_b"])[:4]])
    cfg = _cfg(lab, tmp_path / "cki", "cki", per_adapter=False, calibration=str(shared),
               calibration_options={"steps": 25, "lr": 0.2, "batch_size": 8})
    lc = run_merge(cfg, progress=False)["side_information"]["local_compat"]
    assert lc["calibration_nll_learned"] < lc["calibration_nll_data_free"], lc
    assert lc["weight"] != [0.0, 4.0]
    assert (tmp_path / "cki" / REPORT_NAME).is_file()


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"),
    ("one_without", "has no calibration file"),
    ("no_base", "no config.json"),
])
def test_calibration_refusals_exit_2_without_output(lab, tmp_path, capsys, case, needle):
    out = tmp_path / "out"
    adapters = [{"path": str(lab["a"]), "calibration": str(lab["calib_a"])}, {"path": str(lab["b"])}]
    if case == "missing":
        adapters[1]["calibration"] = str(tmp_path / "nope.jsonl")
    if case == "no_base":  # both adapters name a base folder that holds no model
        adapters = []
        for k in ("a", "b"):
            moved = tmp_path / f"{k}_moved"
            shutil.copytree(lab[k], moved)
            cfg = json.loads((moved / "adapter_config.json").read_text())
            cfg["base_model_name_or_path"] = str(tmp_path / "not_a_model")
            (moved / "adapter_config.json").write_text(json.dumps(cfg))
            adapters.append({"path": str(moved), "calibration": str(lab[f"calib_{k}"])})
    recipe = tmp_path / "merge.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump({"adapters": adapters, "method": "caps", "out": str(out)}))
    code = main(["merge", "--config", str(recipe), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_cli_calibration_flags_match_the_yaml(lab, tmp_path, capsys):
    flags = ["merge", "--method", "caps", "--adapter", str(lab["a"]), "--adapter", str(lab["b"]),
             "--adapter-calibration", str(lab["calib_a"]), "--adapter-calibration", str(lab["calib_b"]),
             "--calibration-examples", "5", "--out", str(tmp_path / "o"), "--dry-run"]
    assert main(flags) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["calibration_examples"] == [5, 5] and plan["calibration_use"] == "used"
    assert [a["calibration"] for a in plan["adapters"]] == [str(lab["calib_a"]), str(lab["calib_b"])]
    assert not (tmp_path / "o").exists()
    assert main(flags[:-1][:7] + ["--adapter-calibration", str(lab["calib_a"]), "--out", str(tmp_path / "o")]) == 2
    assert "one per --adapter" in capsys.readouterr().err
