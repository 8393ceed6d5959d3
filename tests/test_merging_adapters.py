"""LoRA merging I/O, the merge runner and ``tandem merge``, on a tiny Qwen2 base with real PEFT adapters."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from llm_common.adapters import check_compatible, delta_weights, factorize, load_adapter
from merging.config import make_config
from merging.methods.base import METHODS, MergeContext, MergeMethod, register
from merging.run import REPORT_NAME, merge_deltas, plan, run_merge
from pipelines.cli.main import main
from tandem.errors import TandemError

HIDDEN, KV = 32, 16  # q_proj (32, 32), v_proj (16, 32)


if "test_weighted_sum" not in METHODS:
    @register
    class _WeightedSum(MergeMethod):
        """Σ w_i ΔW_i: the reference exact merge."""

        name = "test_weighted_sum"

        def merge(self, tensors: list[torch.Tensor], weights: list[float], ctx: MergeContext) -> torch.Tensor:
            return sum(w * t for w, t in zip(weights, tensors))  # (out, in)


def _make_adapter(base_dir: Path, out: Path, seed: int, targets: list[str], **lora_kw) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(target_modules=targets, **lora_kw))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:  # PEFT inits B to zero: make both factors random so ΔW ≠ 0
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, Qwen2Config

    root = tmp_path_factory.mktemp("merge")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(root / "base")
    qv = ["q_proj", "v_proj"]
    paths = {"root": root, "base": root / "base",
             "a": _make_adapter(root / "base", root / "a", 1, qv, r=4, lora_alpha=8),
             "b": _make_adapter(root / "base", root / "b", 2, qv, r=4, lora_alpha=16, use_rslora=True),
             "c": _make_adapter(root / "base", root / "c", 3, qv, r=4, lora_alpha=4),
             "qk": _make_adapter(root / "base", root / "qk", 4, ["q_proj", "k_proj"], r=4, lora_alpha=8)}
    other = root / "other_base"  # same tensors, a different base model in its config
    shutil.copytree(paths["a"], other)
    cfg_json = json.loads((other / "adapter_config.json").read_text())
    cfg_json["base_model_name_or_path"] = "someone/other-model"
    (other / "adapter_config.json").write_text(json.dumps(cfg_json))
    pickled = root / "pickled"
    shutil.copytree(paths["a"], pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    paths.update(other=other, pickled=pickled)
    return paths


def _hand_delta(folder: Path, module: str, scale: float) -> torch.Tensor:
    from safetensors.torch import load_file

    t = load_file(str(folder / "adapter_model.safetensors"))
    a = t[f"base_model.model.{module}.lora_A.weight"]  # (r, in)
    b = t[f"base_model.model.{module}.lora_B.weight"]  # (out, r)
    return scale * b @ a  # (out, in)


Q0 = "model.layers.0.self_attn.q_proj"


def test_delta_weights_match_peft_scaling(lab):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    a, b = load_adapter(lab["a"]), load_adapter(lab["b"])
    assert a.modules == sorted(f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in "qv")
    assert a.scale(Q0) == 2.0 and b.scale(Q0) == 16 / math.sqrt(4)  # alpha/r; rsLoRA: alpha/sqrt(r)
    assert torch.allclose(delta_weights(a)[Q0], _hand_delta(lab["a"], Q0, 2.0))
    peft_b = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lab["base"]), lab["b"])
    for module, delta in delta_weights(b).items():
        ref = peft_b.base_model.model.get_submodule(module).get_delta_weight("default")  # (out, in)
        assert torch.allclose(delta, ref, atol=1e-6)
    check_compatible([a, b, load_adapter(lab["c"])], base_model=str(lab["base"]))


def test_exact_merge_is_the_weighted_sum(lab):
    cfg = make_config({"adapters": [{"path": str(lab["a"]), "weight": 0.7}, {"path": str(lab["b"]), "weight": -0.2},
                                    {"path": str(lab["c"]), "weight": 1.5}],
                       "method": "test_weighted_sum", "out": str(lab["root"] / "unused")})
    adapters = [load_adapter(s.path) for s in cfg.adapters]
    merged = dict(merge_deltas(cfg, adapters))
    assert len(merged) == 4
    for module, delta in merged.items():
        hand = (0.7 * _hand_delta(lab["a"], module, 2.0) - 0.2 * _hand_delta(lab["b"], module, 8.0)
                + 1.5 * _hand_delta(lab["c"], module, 1.0))  # (out, in)
        assert torch.allclose(delta, hand, atol=1e-6)


def test_svd_error_shrinks_with_rank():
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(24, 16, generator=gen) @ torch.diag(torch.linspace(2, 0.1, 16))  # (24, 16), full rank 16
    errors = []
    for rank in (1, 2, 4, 8, 16, 20):
        a, b, err = factorize(delta, rank)
        assert a.shape == (rank, 16) and b.shape == (24, rank)
        errors.append(err)
    assert all(e1 > e2 for e1, e2 in zip(errors[:3], errors[1:4]))
    assert errors[4] < 1e-5 and errors[5] < 1e-5  # full rank (and zero-padded above it) is exact
    assert factorize(torch.zeros(3, 5), 2)[2] == 0.0


def test_peft_round_trip_same_rank_and_full_rank(lab):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    weights = [0.5, 0.5]
    for rank in (4, 8):  # 4: the inputs' rank (serving costs nothing extra); 8 = 2·4: the sum is exact
        out = lab["root"] / f"merged_r{rank}"
        cfg = make_config({"adapters": [{"path": str(lab["a"]), "weight": weights[0]},
                                        {"path": str(lab["b"]), "weight": weights[1]}],
                           "method": "linear", "parameters": {"normalize": False}, "rank": rank, "out": str(out),
                           "base_model": str(lab["base"])})
        report = run_merge(cfg, progress=False)
        saved_cfg = json.loads((out / "adapter_config.json").read_text())
        assert saved_cfg["r"] == rank and saved_cfg["lora_alpha"] == rank and saved_cfg["modules_to_save"] is None
        assert saved_cfg["target_modules"] == ["q_proj", "v_proj"] or sorted(saved_cfg["target_modules"]) == [
            "q_proj", "v_proj"]
        assert load_file(str(out / "adapter_model.safetensors"))[f"base_model.model.{Q0}.lora_A.weight"].shape == (
            rank, HIDDEN)
        on_disk = json.loads((out / REPORT_NAME).read_text())
        assert on_disk["rank"] == rank and set(on_disk["reconstruction_error"]["per_module"]) == set(
            load_adapter(out).modules)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lab["base"]), out)
        for module in load_adapter(out).modules:
            peft_delta = model.base_model.model.get_submodule(module).get_delta_weight("default")  # (out, in)
            factored = _hand_delta(out, module, 1.0)  # B @ A as saved, scale 1
            assert torch.allclose(peft_delta, factored, atol=1e-5)
            exact = 0.5 * _hand_delta(lab["a"], module, 2.0) + 0.5 * _hand_delta(lab["b"], module, 8.0)
            err = (torch.linalg.matrix_norm(exact - peft_delta) / torch.linalg.matrix_norm(exact)).item()
            assert err == pytest.approx(report["reconstruction_error"]["per_module"][module], abs=1e-5)
            if rank == 8:
                assert err < 1e-5
        if rank == 4:
            assert 0 < report["reconstruction_error"]["max"] < 1


@pytest.mark.parametrize("method,params", [("ties", {"density": 0.5}), ("dare_ties", {"density": 0.5}),
                                           ("task_arithmetic", {"scale": 0.5}), ("cki", {}), ("caps", {})])
def test_registered_methods_run(lab, method, params):
    out = lab["root"] / f"merged_{method}"
    cfg = make_config({"adapters": [{"path": str(lab["a"])}, {"path": str(lab["c"])}], "method": method,
                       "parameters": params, "out": str(out)})
    report = run_merge(cfg, progress=False)
    assert report["rank"] == 4 and load_adapter(out).r == 4


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["merge", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_flags_config_and_dry_run(lab, capsys, tmp_path):
    out = tmp_path / "dry"
    code, stdout, err = _cli(["--method", "linear", "--adapter", f"{lab['a']}:0.3", "--adapter", str(lab["b"]),
                              "--out", str(out), "--dry-run"], capsys)
    assert code == 0 and not out.exists() and not list(tmp_path.iterdir())
    shown = json.loads(stdout)
    assert shown["method"] == "linear" and shown["rank"] == 4 and shown["modules"] == 4
    assert [a["weight"] for a in shown["adapters"]] == [0.3, 1.0]
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(f"method: ties\nparameters: {{density: 0.4}}\nrank: 2\nout: {tmp_path / 'out'}\n"
                      f"adapters:\n  - path: {lab['a']}\n  - path: {lab['c']}\n    weight: 2\n")
    code, stdout, _ = _cli(["--config", str(recipe), "--quiet"], capsys)
    assert code == 0 and json.loads(stdout)["rank"] == 2 and load_adapter(tmp_path / "out").r == 2
    code, stdout, _ = _cli(["--method", "dare_linear", "--adapter", str(lab["a"]), "--adapter", str(lab["c"]),
                            "--param", "density=0.5", "--param", "seed=3", "--out", str(tmp_path / "o2"),
                            "--quiet"], capsys)
    assert code == 0 and json.loads(stdout)["method"] == "dare_linear"


@pytest.mark.parametrize("case,needle", [
    ("base", "different base models"), ("targets", "different target_modules"), ("rank0", "rank=0"),
    ("missing", "is not a folder"), ("pickle", "pickle"), ("method", "unknown merge method"),
    ("one", "adapters"), ("expected_base", "configured base_model"), ("param", "rejects parameters"),
])
def test_cli_refusals(lab, capsys, tmp_path, case, needle):
    out = tmp_path / "merged"
    adapters = {"base": [lab["a"], lab["other"]], "targets": [lab["a"], lab["qk"]], "missing": [lab["a"],
                tmp_path / "nope"], "pickle": [lab["a"], lab["pickled"]], "one": [lab["a"]]}.get(case,
                                                                                                [lab["a"], lab["b"]])
    args = ["--method", "nope" if case == "method" else "linear", "--out", str(out)]
    for a in adapters:
        args += ["--adapter", str(a)]
    args += {"rank0": ["--rank", "0"], "expected_base": ["--base-model", "x/y"],
             "param": ["--param", "density=0.5"]}.get(case, [])
    code, stdout, err = _cli(args, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("tandem: error: ") and needle in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_config_rejects_unknown_keys():
    with pytest.raises(TandemError, match="unknown key 'ranks'"):
        make_config({"adapters": [{"path": "a"}, {"path": "b"}], "method": "linear", "out": "o", "ranks": 2})


def test_plan_has_no_side_effects(lab, tmp_path):
    cfg = make_config({"adapters": [{"path": str(lab["a"])}, {"path": str(lab["c"])}], "method": "linear",
                       "out": str(tmp_path / "x")})
    assert plan(cfg)["module_shapes"][Q0] == [HIDDEN, HIDDEN] and not (tmp_path / "x").exists()


def test_failed_write_leaves_no_output(lab, tmp_path, monkeypatch):
    import merging.run

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(merging.run, "write_adapter", boom)
    cfg = make_config({"adapters": [{"path": str(lab["a"])}, {"path": str(lab["c"])}], "method": "linear",
                       "out": str(tmp_path / "x")})
    with pytest.raises(OSError, match="disk full"):
        run_merge(cfg, progress=False)
    assert not list(tmp_path.iterdir())
