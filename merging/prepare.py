"""What the data-driven methods need before the module-by-module merge, computed from the merge's calibration data.

- ``caps`` with calibration: each expert's gradient × weight attribution on its *own* calibration set
  (:class:`llm_common.adapters.AdapterSpec.calibration`, else the shared file), and the activation-level compatibility
  report (linear CKA of the experts' updates ``ΔW·x`` per module, on the union of all calibration sets), whose lowest
  pairwise value per module decides splice vs average (``cka_threshold``). Without calibration CAPS falls back to
  magnitude attribution ``|ΔW|`` and splices every module.
- ``cki`` with calibration and ``calibration_options.steps > 0``: CKI's local term ``σ(Linear(...))`` fitted with
  the experts frozen, on the union of the calibration sets, by the mean completion NLL of ``base + spliced ΔW``. With
  more than two experts it is fitted on the first fold (the two heaviest experts) and reused for every later fold,
  since its inputs are scale-free. Without calibration (or ``steps: 0``) the data-free rule is used.
- Other methods ignore calibration (the report says so).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_common.adapters import LoraAdapter, module_delta
from merging.config import MergeConfig

USES_CALIBRATION = ("caps", "cki")


@dataclass
class SideInfo:
    """Per-module side information for :class:`merging.methods.MergeContext`, plus what was done (for the report)."""

    attribution: dict[str, list[torch.Tensor]] | None = None  # module -> per expert (out, in)
    cka: dict[str, float] | None = None  # module -> lowest pairwise CKA
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"local_compat": LocalCompat}
    report: dict[str, Any] = field(default_factory=dict)


def calibration_sets(cfg: MergeConfig) -> list[list[tuple[str, str]]] | None:
    """Per adapter, its own calibration examples or the shared ones; None when no calibration is configured.
    An adapter with neither (others have their own, no shared file) is a TandemError."""
    from merging.calibration import read_examples
    from tandem.errors import TandemError

    if cfg.calibration is None and all(s.calibration is None for s in cfg.adapters):
        return None
    n = cfg.calibration_options.max_examples
    shared = read_examples(cfg.calibration, n) if cfg.calibration else None
    out = []
    for spec in cfg.adapters:
        if spec.calibration is None and shared is None:
            raise TandemError(f"adapter {spec.path} has no calibration file and no shared calibration is set; give "
                              f"every adapter a calibration file or set the shared 'calibration'")
        out.append(read_examples(spec.calibration, n) if spec.calibration else shared)
    return out


def base_folder(cfg: MergeConfig, adapters: list[LoraAdapter]) -> Path:
    """The adapters' base model folder, which calibration runs; a TandemError when it is not on disk."""
    from tandem.errors import TandemError

    folder = Path(adapters[0].base_model_name_or_path or cfg.base_model or "")
    if not (folder / "config.json").is_file():
        raise TandemError(f"calibration needs the adapters' base model on disk, but {folder} has no config.json; "
                          f"set base_model_name_or_path in the adapters to a local model folder, or drop calibration")
    return folder


def _union(sets: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(itertools.chain.from_iterable(sets)))


def _deltas(adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    return {m: module_delta(adapter, m) for m in adapter.modules}  # m -> (out, in)


def prepare(cfg: MergeConfig, adapters: list[LoraAdapter], progress: bool = False) -> SideInfo:
    """Compute the side information ``cfg.method`` needs from ``cfg``'s calibration data (see the module doc)."""
    sets = calibration_sets(cfg)
    if sets is None:
        return SideInfo(report={"calibration": None, "attribution": "magnitude |dW|" if cfg.method == "caps" else None})
    if cfg.method not in USES_CALIBRATION:
        return SideInfo(report={"calibration": f"unused: {cfg.method} does not use calibration data"})
    if cfg.method == "cki" and cfg.calibration_options.steps == 0:
        return SideInfo(report={"calibration": "unused: calibration_options.steps is 0 (data-free CKI)"})
    from merging.calibration import DeltaModel

    t0 = time.perf_counter()
    opts = cfg.calibration_options
    dm = DeltaModel(base_folder(cfg, adapters), adapters[0].modules, batch_size=opts.batch_size)
    deltas = [_deltas(a) for a in adapters]
    union = _union(sets)
    info = {"calibration": {"examples_per_adapter": [len(s) for s in sets], "union": len(union)}}
    if cfg.method == "caps":
        side = _caps(dm, deltas, sets, union, progress)
    else:
        side = _cki(dm, deltas, [s.weight for s in cfg.adapters], union, opts, cfg.parameters, progress)
    side.report = {**info, **side.report, "calibration_seconds": round(time.perf_counter() - t0, 2)}
    return side


def _caps(dm, deltas, sets, union, progress: bool) -> SideInfo:
    from merging.methods.caps import compatibility_report, module_cka

    attribution: dict[str, list[torch.Tensor]] = {m: [] for m in dm.modules}
    acts: dict[str, dict[str, torch.Tensor]] = {}
    for k, (d, examples) in enumerate(tqdm(list(zip(deltas, sets)), desc="caps attribution", disable=not progress)):
        for m, a in dm.attribution(d, examples).items():
            attribution[m].append(a)
        acts[f"expert{k}"] = dm.delta_activations(d, union)
    report = compatibility_report(acts)
    cka = {m: module_cka(report, m) for m in dm.modules}
    values = list(cka.values())
    return SideInfo(attribution=attribution, cka=cka, report={
        "attribution": "gradient x weight on each expert's own calibration data",
        "cka": {"per_module": cka, "mean": sum(values) / len(values), "min": min(values),
                "definition": "lowest pairwise linear CKA of the experts' updates dW·x (token-mean per example)"}})


def _cki(dm, deltas, weights, union, opts, params: dict[str, Any], progress: bool) -> SideInfo:
    from merging.calibration import batches
    from merging.methods.cki import LocalCompat, cki_splice, fit_local_compat

    order = sorted(range(len(deltas)), key=lambda k: -weights[k])  # the first fold: the two heaviest
    i, j = order[0], order[1]
    gain = float(params.get("gain", 4.0))
    rule = {"bins": int(params.get("bins", 10)), "global_term": bool(params.get("global_term", True)),
            "rescale": bool(params.get("rescale", False))}
    modules = dm.modules
    pairs = [(deltas[i][m], deltas[j][m]) for m in modules]
    cycle = itertools.cycle(list(batches(union, opts.batch_size)))
    bar = tqdm(total=opts.steps, desc="cki local term", disable=not progress)

    def loss_fn(spliced: list[torch.Tensor]) -> torch.Tensor:
        bar.update(1)
        return dm.loss(dict(zip(modules, spliced)), next(cycle))

    def merged(compat: LocalCompat) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {m: cki_splice(a, b, compat, **rule) for m, (a, b) in zip(modules, pairs)}

    before = dm.mean_nll(merged(LocalCompat(gain)), union)
    compat = fit_local_compat(loss_fn, pairs, steps=opts.steps, lr=opts.lr, compat=LocalCompat(gain), **rule)
    bar.close()
    after = dm.mean_nll(merged(compat), union)
    w = compat.linear.weight.detach().reshape(-1).tolist()
    return SideInfo(extra={"local_compat": compat}, report={
        "local_compat": {"fitted_on": [i, j], "steps": opts.steps, "lr": opts.lr, "weight": w,
                         "bias": float(compat.linear.bias.detach()), "calibration_nll_data_free": before,
                         "calibration_nll_learned": after}})
