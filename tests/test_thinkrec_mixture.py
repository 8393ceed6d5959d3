"""ThinkRec expert mixtures written as LoRA folders from the adapter files alone (arXiv 2505.15091): the folder holds
exactly Σ w_k ΔW_k, the same as PEFT's "cat" mixture in memory, and MixtureFiles reuses folders by rounded weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import peft
import pytest
import torch

from llm_cloud.thinkrec.experts import MixtureCache, _mixture_name, add_mixture  # noqa: E402
from llm_cloud.thinkrec.mixture_files import (  # noqa: E402
    MixtureFiles,
    adapter_rank,
    vllm_max_lora_rank,
    write_mixture,
)
from llm_common.adapters import load_adapter, module_delta  # noqa: E402
from tandem.errors import TandemError  # noqa: E402
from tests.test_thinkrec_experts import MIXED_SPECS  # noqa: E402
from tests.test_thinkrec_experts import _experts as expert_model  # noqa: E402

SPECS = MIXED_SPECS  # (r, alpha): (4, 8), (2, 16), (8, 4), scalings 2, 8, 0.5
WEIGHTS = [0.5, 0.3, 0.2]


def _experts(root: Path) -> tuple[peft.PeftModel, list[Path]]:
    """The tiny Llama of ``tests/test_thinkrec_experts.py`` with random adapters g0, g1, g2 of the ranks/alphas in
    SPECS, each also saved under ``root``."""
    model = expert_model(SPECS)
    dirs = []
    for i in range(len(SPECS)):
        model.save_pretrained(root / f"s{i}", selected_adapters=[f"g{i}"])
        dirs.append(root / f"s{i}" / f"g{i}")  # PEFT nests a non-default adapter under its name
    return model.eval(), dirs


def test_write_mixture_is_the_exact_weighted_sum_and_matches_peft_cat(tmp_path: Path) -> None:
    model, dirs = _experts(tmp_path)
    out = write_mixture(dirs, WEIGHTS, tmp_path / "mix")
    mix = load_adapter(out)
    inputs = [load_adapter(d) for d in dirs]
    assert mix.r == mix.lora_alpha == 4 + 2 + 8 == adapter_rank(out)
    assert [a.r for a in inputs] == [4, 2, 8] and [a.lora_alpha for a in inputs] == [8, 16, 4]
    assert len(mix.modules) == 4 and mix.modules == inputs[0].modules  # q_proj, v_proj in 2 layers
    add_mixture(model, ["g0", "g1", "g2"], WEIGHTS, "cat")
    model.save_pretrained(tmp_path / "peft", selected_adapters=["cat"])
    peft_mix = load_adapter(tmp_path / "peft" / "cat")
    for module in mix.modules:
        want = sum(w * module_delta(a, module) for a, w in zip(inputs, WEIGHTS))  # (out, in)
        got = module_delta(mix, module)
        assert want.abs().max() > 1e-3  # not vacuous
        assert torch.allclose(got, want, atol=1e-5), module
        assert torch.allclose(got, module_delta(peft_mix, module), atol=1e-5), module


def test_mixture_files_reuses_folders_by_rounded_weights(tmp_path: Path) -> None:
    _, dirs = _experts(tmp_path)
    files = MixtureFiles(tmp_path, dirs, capacity=2)
    assert files.rank == 14
    name, path = files.get([0.5, 0.3, 0.2])
    assert path == tmp_path / "mixtures" / name and (path / "adapter_model.safetensors").is_file()
    assert name == _mixture_name(("g0", "g1", "g2"), MixtureCache.rounded([0.5, 0.3, 0.2]))  # as MixtureCache names it
    assert files.writes == 1
    stamp = (path / "adapter_model.safetensors").stat().st_mtime_ns
    again, same = files.get([0.501, 0.2996, 0.2004])  # equal after rounding to 0.01
    assert (again, same) == (name, path) and files.writes == 1
    assert (path / "adapter_model.safetensors").stat().st_mtime_ns == stamp  # not rewritten
    assert MixtureFiles(tmp_path, dirs).get([0.5, 0.3, 0.2]) == (name, path)  # another process reuses it too
    other, other_path = files.get([0.2, 0.3, 0.5])
    assert other != name and other_path.is_dir() and files.writes == 2
    mix = load_adapter(other_path)
    inputs = [load_adapter(d) for d in dirs]
    module = mix.modules[0]
    want = sum(w * module_delta(a, module) for a, w in zip(inputs, [0.2, 0.3, 0.5]))
    assert torch.allclose(module_delta(mix, module), want, atol=1e-5)
    files.get([0.6, 0.2, 0.2])  # a third folder: capacity 2 drops the least recently used (the first one)
    assert not path.exists() and other_path.is_dir() and len(list((tmp_path / "mixtures").iterdir())) == 2
    with pytest.raises(TandemError, match="weights"):
        files.get([0.5, 0.5])


def test_vllm_max_lora_rank_rounds_up_to_an_accepted_value() -> None:
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 14, 300, 512)] == [1, 8, 8, 16, 16, 320, 512]
    with pytest.raises(TandemError, match="max_lora_rank"):
        vllm_max_lora_rank(513)


def test_vllm_scorer_names_the_install_command_when_vllm_is_missing(tmp_path: Path) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed; tests/test_thinkrec_vllm.py covers the scorer")
    from llm_cloud.thinkrec.vllm_scorer import VLLMThinkRec

    with pytest.raises(TandemError, match=r"pip install -e \"\.\[vllm\]\""):
        VLLMThinkRec(tmp_path)
