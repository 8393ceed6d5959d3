"""ThinkRec's expert mixtures (arXiv 2505.15091) as LoRA folders on disk, built from the adapter files alone.

A server that takes per-request LoRA folders (vLLM) cannot call PEFT's ``add_weighted_adapter`` inside its model, so
the gate-weighted mixture of the group experts is pre-merged into a plain PEFT LoRA folder, without loading any model:

* :func:`write_mixture` writes the exact mixture ``ΔW_mix = Σ_k w_k ΔW_k`` of some adapter folders;
* :class:`MixtureFiles` keeps such folders under ``<thinkrec folder>/mixtures/<name>/``, keyed (and named) by the
  rounded weights exactly like :class:`~llm_cloud.thinkrec.experts.MixtureCache`, so a mixture is written once and
  reused by every later request (and process) with the same rounded gate.

Why "cat": with ``ΔW_k = s_k B_k A_k`` (``s_k`` = alpha_k / r_k), stacking along the rank dimension,
``A_mix = cat_k(w_k s_k A_k)`` (Σr_k, in) and ``B_mix = cat_k(B_k)`` (out, Σr_k), gives
``B_mix A_mix = Σ_k w_k s_k B_k A_k`` exactly, with ``r = lora_alpha = Σ r_k`` (scale 1). PEFT's "linear"
combination instead mixes the A's and the B's separately, ``(Σ w_k B_k)(Σ w_k A_k)``, which adds cross terms
``B_i A_j`` (i ≠ j) and is not the weighted sum. This is what :func:`~llm_cloud.thinkrec.experts.add_mixture` does in
memory (PEFT ``combination_type="cat"``), done here on the files.

The price is rank: the mixture's rank is the SUM of the experts' ranks, so a vLLM engine serving mixtures needs
``max_lora_rank`` at least that. vLLM 0.32 accepts only the values in :data:`VLLM_LORA_RANKS`
(``MaxLoRARanks`` in ``vllm/config/lora.py``); :func:`vllm_max_lora_rank` rounds up to the next one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llm_cloud.thinkrec.experts import MixtureCache, _mixture_name
from llm_common.adapters import CONFIG_NAME, check_compatible, load_adapter, write_adapter
from tandem.errors import TandemError
from tandem.io import atomic_directory

MIXTURES = "mixtures"
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py, MaxLoRARanks (vLLM 0.32)


def adapter_rank(folder: str | Path) -> int:
    """The largest LoRA rank in a PEFT adapter folder (``r``, or a bigger ``rank_pattern`` entry)."""
    cfg = json.loads((Path(folder) / CONFIG_NAME).read_text())
    return max([int(cfg.get("r", 8)), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())])


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that is at least ``rank``."""
    allowed = VLLM_LORA_RANKS
    try:  # the installed vLLM's own list, when there is one
        import typing

        from vllm.config.lora import MaxLoRARanks

        allowed = tuple(sorted(int(v) for v in typing.get_args(MaxLoRARanks))) or allowed
    except Exception:  # noqa: BLE001 - vLLM missing or laid out differently: the 0.32 list
        pass
    for value in allowed:
        if value >= rank:
            return value
    raise TandemError(f"a LoRA rank of {rank} is above vLLM's largest max_lora_rank ({allowed[-1]}); a mixture's rank "
                      f"is the sum of the experts' ranks, so train fewer or lower-rank experts")


def write_mixture(adapter_dirs: Sequence[str | Path], weights: Sequence[float], out: str | Path) -> Path:
    """Write the exact mixture ``Σ_k w_k ΔW_k`` of the PEFT LoRA folders ``adapter_dirs`` to ``out`` (atomically).

    Per module ``A_mix = cat_k(w_k s_k A_k)`` and ``B_mix = cat_k(B_k)`` along the rank dimension; the folder has
    ``r = lora_alpha = Σ_k r_k`` (scale 1), float32 factors, and the first adapter's targets and base model. Modules
    whose summed rank is smaller (``rank_pattern``) are padded with zero rank rows. See the module docstring.
    """
    if not adapter_dirs or len(adapter_dirs) != len(weights):
        raise TandemError(f"write_mixture: need one weight per adapter, got {len(adapter_dirs)} adapters and "
                          f"{len(weights)} weights")
    adapters = [load_adapter(d) for d in adapter_dirs]
    if len(adapters) > 1:
        check_compatible(adapters)
    for a in adapters:
        if a.use_rslora:
            raise TandemError(f"write_mixture: adapter {a.path} uses rsLoRA; the exact mixture needs plain LoRA")
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module in adapters[0].modules:
        a_mix = torch.cat([float(w) * a.scale(module) * a.A[module].float()
                           for a, w in zip(adapters, weights)])  # (Σ r_k, in)
        b_mix = torch.cat([a.B[module].float() for a in adapters], dim=1)  # (out, Σ r_k)
        factors[module] = (a_mix, b_mix)
    rank = max(a.shape[0] for a, _ in factors.values())
    for module, (a, b) in factors.items():
        pad = rank - a.shape[0]
        if pad:
            factors[module] = (torch.cat([a, a.new_zeros(pad, a.shape[1])]),
                               torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1))
    with atomic_directory(out) as tmp:
        write_adapter(tmp, adapters[0].config, factors, rank)
    return Path(out)


class MixtureFiles:
    """Pre-merged expert mixtures cached on disk as ``<folder>/mixtures/<name>/`` (PEFT LoRA folders).

    ``experts`` are the group adapter folders (their folder names, e.g. ``g0``, name them). :meth:`get` rounds the
    gate weights with :meth:`MixtureCache.rounded` and names the mixture like :class:`MixtureCache` does, so the same
    gate gives the same name in the transformers model and here. A folder already on disk is reused (also one written
    by an earlier process); when more than ``capacity`` mixtures are on disk the least recently used ones are deleted
    (a later request for one writes it again). ``writes`` counts the folders this object wrote.
    """

    def __init__(self, folder: str | Path, experts: Sequence[str | Path], capacity: int = 64) -> None:
        if capacity < 1:
            raise TandemError(f"MixtureFiles: capacity must be at least 1, got {capacity}")
        if not experts:
            raise TandemError("MixtureFiles: no expert adapters to mix; train group experts first")
        self.root = Path(folder) / MIXTURES
        self.experts = [Path(e) for e in experts]
        self.names = tuple(e.name for e in self.experts)
        self.capacity = capacity
        self.writes = 0

    @property
    def rank(self) -> int:
        """The rank of every mixture: the sum of the experts' ranks."""
        return sum(adapter_rank(e) for e in self.experts)

    def get(self, weights: Sequence[float] | np.ndarray) -> tuple[str, Path]:
        """``(name, folder)`` of the mixture with these (rounded, renormalised) weights, written on a miss."""
        if len(weights) != len(self.experts):
            raise TandemError(f"MixtureFiles.get: {len(weights)} weights for {len(self.experts)} experts")
        w = MixtureCache.rounded(weights)
        name = _mixture_name(self.names, w)
        path = self.root / name
        if (path / CONFIG_NAME).is_file():
            os.utime(path)  # most recently used
            return name, path
        write_mixture(self.experts, list(w), path)
        self.writes += 1
        self._evict(keep=path)
        return name, path

    def _evict(self, keep: Path) -> None:
        folders = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep]
        folders.sort(key=lambda p: p.stat().st_mtime)
        for victim in folders[:max(0, len(folders) + 1 - self.capacity)]:
            shutil.rmtree(victim, ignore_errors=True)
