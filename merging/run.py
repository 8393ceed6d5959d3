"""Run a LoRA merge: load and check the adapters, merge each module's exact ΔW with the configured method, re-factorise
to the output rank by truncated SVD and write a PEFT adapter folder atomically (CKI arXiv 2501.07596; Graft/CAPS
arXiv 2506.23940).

The merge itself is exact in ΔW space (ΔW_i = scale_i · B_i @ A_i in float32); the only approximation is the final
SVD truncation, whose relative Frobenius error per module is recorded in ``merge_report.json`` inside the output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_common.adapters import (
    LoraAdapter,
    check_compatible,
    factorize,
    load_adapter,
    module_delta,
    output_config,
    relative_error,
    write_adapter,
)
from merging.config import MergeConfig
from merging.prepare import USES_CALIBRATION, SideInfo, base_folder, calibration_sets, prepare
from tandem.errors import TandemError
from tandem.io import atomic_directory

REPORT_NAME = "merge_report.json"


def _load_checked(cfg: MergeConfig) -> list[LoraAdapter]:
    adapters = [load_adapter(spec.path) for spec in cfg.adapters]
    check_compatible(adapters, base_model=cfg.base_model)
    return adapters


def _output_rank(cfg: MergeConfig, adapters: list[LoraAdapter]) -> int:
    """The configured rank, else the largest input rank (the adapters' r when they share one: same serving cost)."""
    return cfg.rank if cfg.rank is not None else max(a.A[m].shape[0] for a in adapters for m in a.modules)


def _make(cfg: MergeConfig):
    from merging.methods import make_method

    try:
        return make_method(cfg.method, **cfg.parameters)
    except (TypeError, ValueError) as exc:
        raise TandemError(f"merge method {cfg.method!r} rejects parameters {cfg.parameters}: {exc}; see the "
                          f"method's docstring in merging/methods/ for its parameters") from None


def _check_out(cfg: MergeConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise TandemError(f"out {out} exists and is not a folder; pass a new or existing folder path")
    if any(Path(spec.path).resolve() == out.resolve() for spec in cfg.adapters):
        raise TandemError(f"out {out} is one of the input adapters; pass a different output folder")


def plan(cfg: MergeConfig, adapters: list[LoraAdapter] | None = None) -> dict[str, Any]:
    """What :func:`run_merge` will do (adapters, modules, method, params, output rank), after all checks but
    before any merge or write; ``tandem merge --dry-run`` prints it. ``adapters``: already loaded and checked."""
    adapters = _load_checked(cfg) if adapters is None else adapters
    _make(cfg)
    _check_out(cfg)
    sets = calibration_sets(cfg)  # reads (and so checks) every calibration file
    if sets is not None and cfg.method in USES_CALIBRATION:
        base_folder(cfg, adapters)
    rank = _output_rank(cfg, adapters)
    modules = adapters[0].modules
    shapes = {m: [adapters[0].B[m].shape[0], adapters[0].A[m].shape[1]] for m in modules}
    return {
        "adapters": [{"path": a.path, "weight": s.weight, "r": a.r, "lora_alpha": a.lora_alpha,
                      "use_rslora": a.use_rslora, "calibration": s.calibration}
                     for a, s in zip(adapters, cfg.adapters)],
        "base_model": adapters[0].base_model_name_or_path,
        "target_modules": adapters[0].target_modules,
        "modules": len(modules),
        "module_shapes": shapes,  # module -> [out, in]
        "method": cfg.method,
        "parameters": cfg.parameters,
        "calibration": cfg.calibration,
        "calibration_examples": None if sets is None else [len(x) for x in sets],
        "calibration_use": (("none configured" if sets is None else "used") if cfg.method in USES_CALIBRATION
                            else "ignored by this method"),
        "calibration_options": cfg.calibration_options.model_dump(),
        "rank": rank,
        "input_ranks": sorted({a.A[m].shape[0] for a in adapters for m in modules}),
        "out": cfg.out,
        "output_config": {k: v for k, v in output_config(adapters[0].config, rank).items()
                          if k in ("r", "lora_alpha", "use_rslora", "target_modules", "base_model_name_or_path")},
    }


def merge_deltas(cfg: MergeConfig, adapters: list[LoraAdapter], progress: bool = False,
                 side: SideInfo | None = None):
    """Yield (module, merged ΔW (out, in)) for every module: the method applied to the exact per-expert ΔW.

    ``side`` (from :func:`merging.prepare.prepare`) supplies calibration-derived attribution, per-module CKA and
    method extras; without it every method gets ``ctx.attribution`` = |ΔW_i| (magnitude importance, CAPS's
    data-free fallback)."""
    from merging.methods import MergeContext

    method = _make(cfg)
    side = side if side is not None else SideInfo()
    weights = [spec.weight for spec in cfg.adapters]
    for module in tqdm(adapters[0].modules, desc=f"merge ({cfg.method})", disable=not progress):
        tensors = [module_delta(a, module) for a in adapters]  # m × (out, in), one module in memory at a time
        attribution = side.attribution[module] if side.attribution else [t.abs() for t in tensors]
        extra = dict(side.extra)
        if side.cka is not None:
            extra["cka"] = side.cka[module]
        ctx = MergeContext(name=module, attribution=attribution, extra=extra)
        try:
            merged = method.merge(tensors, weights, ctx)  # (out, in)
        except ValueError as exc:
            raise TandemError(f"merge method {cfg.method!r} failed on module {module!r}: {exc}") from None
        if merged.shape != tensors[0].shape or not torch.isfinite(merged).all():
            raise TandemError(f"merge method {cfg.method!r} returned shape {tuple(merged.shape)} or non-finite "
                              f"values for module {module!r} (ΔW {tuple(tensors[0].shape)}); check its parameters")
        yield module, merged.float()


def run_merge(cfg: MergeConfig, progress: bool = True) -> dict[str, Any]:
    """Merge, factorise and write ``cfg.out`` (PEFT LoRA folder + ``merge_report.json``); return the report.

    On any failure no output folder is left behind (``tandem.io.atomic_directory``)."""
    t0 = time.perf_counter()
    adapters = _load_checked(cfg)
    info = plan(cfg, adapters)
    rank = info["rank"]
    dtype = adapters[0].A[adapters[0].modules[0]].dtype
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    errors: dict[str, float] = {}
    side = prepare(cfg, adapters, progress=progress)
    for module, merged in merge_deltas(cfg, adapters, progress=progress, side=side):
        a, b, _ = factorize(merged, rank)  # (rank, in), (out, rank)
        a, b = a.to(dtype), b.to(dtype)
        errors[module] = relative_error(merged, a, b)  # measured on the factors as saved
        factors[module] = (a, b)
    values = list(errors.values())
    report = {
        **{k: info[k] for k in ("adapters", "base_model", "method", "parameters", "calibration", "rank", "out")},
        "modules": len(errors),
        "dtype": str(dtype).removeprefix("torch."),
        "reconstruction_error": {"per_module": errors, "mean": sum(values) / len(values), "max": max(values),
                                 "definition": "||dW - B@A||_F / ||dW||_F of the merged dW and the saved factors"},
        "exact_before_svd": True,
        "side_information": side.report,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    with atomic_directory(cfg.out) as tmp:
        write_adapter(tmp, adapters[0].config, factors, rank, dtype=dtype)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
