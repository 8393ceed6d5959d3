"""The merge-method interface and its one registry (mergekit's layout: one file per method, one explicit registry).

A method merges one parameter at a time: ``merge(tensors, weights, ctx)`` gets the same-shaped tensors of every input
model (for LoRA experts: each expert's exact ΔW = scale·B·A of one module; for whole models: one state-dict entry)
and returns the merged tensor of that shape. Methods of the task-arithmetic family read ``ctx.base`` when the inputs
are full weights (they merge the deltas θ_i − base and add base back); ``ctx.base is None`` means the inputs already
are deltas (the LoRA case). Methods that need per-model side information (CAPS's attribution scores, a learned local
compatibility) find it in ``ctx``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass
class MergeContext:
    """What a method may know about the parameter it merges besides the tensors themselves."""

    name: str = ""  # parameter / module name, e.g. "model.layers.0.self_attn.q_proj"
    base: torch.Tensor | None = None  # the shared base weight when the inputs are full weights; None: inputs are deltas
    attribution: list[torch.Tensor] | None = None  # per model, same shape as the tensors: importance (CAPS)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific (e.g. a learned local-compatibility layer)


class MergeMethod(ABC):
    name: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params = params

    @abstractmethod
    def merge(self, tensors: list[torch.Tensor], weights: list[float], ctx: MergeContext) -> torch.Tensor:
        """Same-shaped tensors (one per model) and their weights -> the merged tensor of that shape."""


METHODS: dict[str, type[MergeMethod]] = {}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, **params: Any) -> MergeMethod:
    if name not in METHODS:
        raise ValueError(f"unknown merge method {name!r}; known methods are {', '.join(sorted(METHODS))}")
    return METHODS[name](**params)
