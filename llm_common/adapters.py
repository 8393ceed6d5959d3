"""Read and write PEFT LoRA adapter folders, and move between (A, B) factors and exact ΔW.

A PEFT LoRA folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` whose keys are
``base_model.model.<module>.lora_A.weight`` (r, in) and ``base_model.model.<module>.lora_B.weight`` (out, r), where
``<module>`` is the module's name inside the base model (e.g. ``model.layers.0.self_attn.q_proj``); PEFT drops the
adapter name ("default") when it saves. The adapter adds ``ΔW = scale · B @ A`` to that module's weight, with
``scale = lora_alpha / r`` (``lora_alpha / sqrt(r)`` under rsLoRA), per-module ``r``/``lora_alpha`` overridden by
``rank_pattern``/``alpha_pattern``. For ``fan_in_fan_out`` layers (GPT-2's Conv1D) PEFT transposes ΔW into the weight's
layout; here ΔW is always the (out, in) product B @ A and the flag is carried through to the output unchanged.

Merging follows CKI (arXiv 2501.07596) and Graft/CAPS (arXiv 2506.23940): experts are merged on ΔW exactly, then
:func:`factorize` re-factorises the merged ΔW to a stated rank by truncated SVD, and :func:`write_adapter` writes it
back as a plain LoRA adapter (no DoRA, no bias, no modules_to_save) that PEFT and vLLM load.

Only safetensors weights are read: ``adapter_model.bin``/``.pt``/``.pth`` are pickles, and unpickling a downloaded
file runs whatever code it carries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tandem.errors import TandemError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
KEY_PREFIX = "base_model.model."
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


@dataclass
class LoraAdapter:
    """One PEFT LoRA adapter: its config and, per target module, the factors A (r, in) and B (out, r)."""

    path: str
    base_model_name_or_path: str | None
    target_modules: list[str] | str  # list of names, or PEFT's regex string
    r: int
    lora_alpha: float
    use_rslora: bool
    config: dict[str, Any]  # the raw adapter_config.json, the template of the output
    A: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> (r_m, in)
    B: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> (out, r_m)

    def scale(self, module: str) -> float:
        """PEFT's scaling of ``module``: alpha / r (rsLoRA: alpha / sqrt(r)), with rank/alpha patterns applied."""
        r = _pattern_value(self.config.get("rank_pattern") or {}, module, self.r)
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, module, self.lora_alpha)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    @property
    def modules(self) -> list[str]:
        return sorted(self.A)


def _pattern_value(pattern: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``get_pattern_key``: the first pattern key that matches a dotted suffix of the module name."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(path: str | Path) -> LoraAdapter:
    """Read a PEFT LoRA folder; raise TandemError naming the problem and the fix."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise TandemError(f"adapter {folder} is not a folder; pass a PEFT LoRA adapter folder holding {CONFIG_NAME} "
                          f"and {WEIGHTS_NAME}")
    cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not w_path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise TandemError(f"adapter {folder} has {pickles[0]}, a pickle file; only safetensors weights are read "
                              f"because loading a pickle runs the code it carries; re-save it with "
                              f"save_pretrained(..., safe_serialization=True) to get {WEIGHTS_NAME}")
        raise TandemError(f"adapter {folder} has no {WEIGHTS_NAME}; pass a PEFT LoRA folder saved with "
                          f"save_pretrained()")
    if not cfg_path.is_file():
        raise TandemError(f"adapter {folder} has no {CONFIG_NAME}; pass a PEFT LoRA folder saved with "
                          f"save_pretrained()")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TandemError(f"adapter {cfg_path} is not valid JSON ({exc}); re-save the adapter") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise TandemError(f"adapter {folder} is peft_type {config.get('peft_type')!r}; only LORA adapters merge")
    for flag in ("use_dora", "lora_bias"):
        if config.get(flag):
            raise TandemError(f"adapter {folder} sets {flag}=true; only plain LoRA (ΔW = B·A) merges exactly, "
                              f"retrain without {flag}")
    for key in ("target_parameters", "trainable_token_indices"):
        if config.get(key):
            raise TandemError(f"adapter {folder} sets {key}; only LoRA on Linear modules merges, retrain without it")
    if config.get("modules_to_save"):
        raise TandemError(f"adapter {folder} has modules_to_save {config['modules_to_save']}: fully trained "
                          f"modules are not LoRA and are not merged; retrain without modules_to_save")
    try:
        tensors = load_file(str(w_path))
    except Exception as exc:  # safetensors raises its own error types
        raise TandemError(f"adapter weights {w_path} cannot be read ({exc}); re-save the adapter") from None
    adapter = LoraAdapter(path=str(folder), base_model_name_or_path=config.get("base_model_name_or_path"),
                          target_modules=config.get("target_modules") or [], r=int(config.get("r", 8)),
                          lora_alpha=float(config.get("lora_alpha", 8)), use_rslora=bool(config.get("use_rslora")),
                          config=config)
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise TandemError(f"adapter {w_path} has tensor {key!r}, which is not a LoRA A/B weight (e.g. an "
                              f"embedding LoRA or a trained module); only plain Linear LoRA merges")
        (adapter.A if m["which"] == "A" else adapter.B)[m["module"]] = value
    unpaired = sorted(set(adapter.A) ^ set(adapter.B))
    if unpaired:
        raise TandemError(f"adapter {w_path} has only one of lora_A/lora_B for module {unpaired[0]!r}; re-save it")
    if not adapter.A:
        raise TandemError(f"adapter {w_path} holds no LoRA weights; pass a trained LoRA adapter")
    for module in adapter.A:
        if adapter.B[module].shape[1] != adapter.A[module].shape[0]:
            raise TandemError(f"adapter {w_path}, module {module!r}: lora_B {tuple(adapter.B[module].shape)} and "
                              f"lora_A {tuple(adapter.A[module].shape)} ranks differ; re-save it")
    return adapter


def module_delta(adapter: LoraAdapter, module: str) -> torch.Tensor:
    """Exact ΔW of one module in float32: scale · B @ A, shape (out, in)."""
    return adapter.scale(module) * (adapter.B[module].float() @ adapter.A[module].float())  # (out, in)


def delta_weights(adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    """Exact ΔW of every module (see :func:`module_delta`); the runner builds them one module at a time instead."""
    return {m: module_delta(adapter, m) for m in adapter.modules}  # module -> (out, in)


def _targets(adapter: LoraAdapter) -> list[str] | str:
    t = adapter.target_modules
    return t if isinstance(t, str) else sorted(t)


def check_compatible(adapters: Sequence[LoraAdapter], base_model: str | None = None) -> None:
    """Same base model, target modules, module set and ΔW shapes; else TandemError naming the first difference."""
    if len(adapters) < 2:
        raise TandemError(f"merging needs at least 2 adapters, got {len(adapters)}; pass more adapters")
    ref = adapters[0]
    if base_model is not None and ref.base_model_name_or_path != base_model:
        raise TandemError(f"adapter {ref.path} was trained on base model {ref.base_model_name_or_path!r}, not the "
                          f"configured base_model {base_model!r}; fix base_model or pass adapters of that base")
    for other in adapters[1:]:
        if other.base_model_name_or_path != ref.base_model_name_or_path:
            raise TandemError(f"adapters are on different base models: {ref.path} on "
                              f"{ref.base_model_name_or_path!r}, {other.path} on {other.base_model_name_or_path!r}; "
                              f"merge only adapters trained on the same base model")
        if _targets(other) != _targets(ref):
            raise TandemError(f"adapters have different target_modules: {ref.path} {_targets(ref)}, {other.path} "
                              f"{_targets(other)}; merge only adapters that target the same modules")
        for module in sorted(set(ref.A) | set(other.A)):
            if module not in ref.A or module not in other.A:
                has, lacks = (ref, other) if module in ref.A else (other, ref)
                raise TandemError(f"adapters have different modules: {has.path} adapts {module!r}, {lacks.path} "
                                  f"does not; merge only adapters with the same target modules and layers")
            s_ref = (ref.B[module].shape[0], ref.A[module].shape[1])
            s_oth = (other.B[module].shape[0], other.A[module].shape[1])
            if s_ref != s_oth:
                raise TandemError(f"adapters differ at module {module!r}: ΔW shape {s_ref} in {ref.path}, {s_oth} "
                                  f"in {other.path}; merge only adapters of the same base model")


def factorize(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Truncated SVD of ΔW (out, in) to ``rank``: A = √S·Vᵀ (rank, in), B = U·√S (out, rank), and the relative
    Frobenius error ‖ΔW − B@A‖ / ‖ΔW‖ (0 when ΔW = 0). A rank above min(out, in) is padded with zero rows/columns,
    so the factors always have the requested rank."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    delta = delta.float()  # (out, in)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)  # (out, k), (k,), (k, in)
    k = min(rank, s.shape[0])
    root = s[:k].sqrt()  # (k,)
    b = torch.zeros(delta.shape[0], rank)  # (out, rank)
    a = torch.zeros(rank, delta.shape[1])  # (rank, in)
    b[:, :k] = u[:, :k] * root  # (out, k)
    a[:k] = root[:, None] * vh[:k]  # (k, in)
    return a, b, relative_error(delta, a, b)


def relative_error(delta: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """‖ΔW − B@A‖_F / ‖ΔW‖_F, computed in float32 (0 for ΔW = 0 reconstructed exactly)."""
    delta = delta.float()  # (out, in)
    norm = torch.linalg.matrix_norm(delta).item()
    diff = torch.linalg.matrix_norm(delta - b.float() @ a.float()).item()  # ‖(out, in)‖
    return diff / norm if norm > 0 else diff


def output_config(template: Mapping[str, Any], rank: int, base_model: str | None = None) -> dict[str, Any]:
    """The merged adapter's config: the template's targets, task and layout with r = lora_alpha = rank (scale 1, the
    factors carry all of ΔW), no rank/alpha patterns, no rsLoRA/DoRA/bias/modules_to_save."""
    cfg = dict(template)
    cfg.update(r=rank, lora_alpha=rank, rank_pattern={}, alpha_pattern={}, use_rslora=False, use_dora=False,
               lora_bias=False, modules_to_save=None, inference_mode=True, lora_dropout=0.0)
    if base_model is not None:
        cfg["base_model_name_or_path"] = base_model
    return cfg


def write_adapter(out_dir: str | Path, template_config: Mapping[str, Any],
                  factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], rank: int,
                  dtype: torch.dtype = torch.float32) -> Path:
    """Write a PEFT LoRA folder: ``adapter_config.json`` (see :func:`output_config`) and
    ``adapter_model.safetensors`` with ``base_model.model.<module>.lora_A.weight`` (rank, in) and ``.lora_B.weight``
    (out, rank). ``out_dir`` is written in place; wrap it in ``tandem.io.atomic_directory`` for atomicity."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for module, (a, b) in factors.items():
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ValueError(f"module {module!r}: factors of rank {a.shape[0]}/{b.shape[1]}, expected {rank}")
        tensors[f"{KEY_PREFIX}{module}.lora_A.weight"] = a.to(dtype).contiguous()  # (rank, in)
        tensors[f"{KEY_PREFIX}{module}.lora_B.weight"] = b.to(dtype).contiguous()  # (out, rank)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    cfg = output_config(template_config, rank)
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out
