"""Merge whole state dicts (e.g. two SASRec checkpoints, CKI's setting) one entry at a time with any merge method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from merging.methods.base import MergeMethod


def check_compatible(state_dicts: Sequence[Mapping[str, torch.Tensor]],
                     base: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise ValueError naming the first key that is missing somewhere or whose shape differs."""
    if not state_dicts:
        raise ValueError("merge_state_dicts needs at least one state dict")
    ref = state_dicts[0]
    others = [(f"model {k}", sd) for k, sd in enumerate(state_dicts[1:], start=1)]
    others += [("base", base)] if base is not None else []
    for who, sd in others:
        for key in list(ref) + [k for k in sd if k not in ref]:
            if key not in ref or key not in sd:
                has, lacks = ("model 0", who) if key in ref else (who, "model 0")
                raise ValueError(f"state dicts differ at key {key!r}: {has} has it, {lacks} does not; merge models "
                                 f"of the same architecture")
            if ref[key].shape != sd[key].shape:
                raise ValueError(f"state dicts differ at key {key!r}: shape {tuple(ref[key].shape)} in model 0, "
                                 f"{tuple(sd[key].shape)} in {who}; merge models of the same architecture and size")


def merge_state_dicts(method: MergeMethod, state_dicts: Sequence[Mapping[str, torch.Tensor]],
                      weights: Sequence[float] | None = None, base: Mapping[str, torch.Tensor] | None = None,
                      progress: bool = False, attribution: Mapping[str, list[torch.Tensor]] | None = None,
                      extra: Mapping[str, object] | None = None) -> dict[str, torch.Tensor]:
    """Merge same-architecture state dicts key by key with ``method``; float entries are merged in float32 and cast
    back, non-float entries (step counters, index buffers) are taken from the first model. ``weights`` defaults to
    equal; ``base`` is the shared base state dict for task-arithmetic methods; ``attribution[key]`` and ``extra``
    reach the method through :class:`MergeContext`."""
    from merging.methods.base import MergeContext

    check_compatible(state_dicts, base)
    weights = [1.0 / len(state_dicts)] * len(state_dicts) if weights is None else list(weights)
    if len(weights) != len(state_dicts):
        raise ValueError(f"got {len(weights)} weights for {len(state_dicts)} state dicts; pass one weight per model")
    out: dict[str, torch.Tensor] = {}
    for key in tqdm(list(state_dicts[0]), desc=f"merge ({method.name})", disable=not progress):
        first = state_dicts[0][key]
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        ctx = MergeContext(name=key, base=None if base is None else base[key].float(),
                           attribution=None if attribution is None else attribution.get(key),
                           extra=dict(extra or {}))
        merged = method.merge([sd[key].float() for sd in state_dicts], weights, ctx)
        out[key] = merged.to(first.dtype)
    return out
