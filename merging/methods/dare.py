"""DARE (drop and rescale, arXiv 2311.03099) as configured instances of task arithmetic: each delta keeps an entry
with probability ``density`` and is rescaled by 1/density (so its expectation is unchanged), then either a weighted
sum (``dare_linear``) or TIES's sign election + disjoint mean (``dare_ties``), × ``scale``."""

from __future__ import annotations

from typing import Any, ClassVar

from merging.methods.base import register
from merging.methods.task_arithmetic import TaskArithmetic


@register
class DareLinear(TaskArithmetic):
    """Defaults: ``density`` 0.5, ``rescale`` True, ``seed`` 0."""

    name = "dare_linear"
    defaults: ClassVar[dict[str, Any]] = {**TaskArithmetic.defaults, "sparsify": "random", "density": 0.5}


@register
class DareTies(TaskArithmetic):
    """Defaults: ``density`` 0.5, ``rescale`` True, ``seed`` 0, sign election on."""

    name = "dare_ties"
    defaults: ClassVar[dict[str, Any]] = {**TaskArithmetic.defaults, "sparsify": "random", "density": 0.5,
                                          "sign_election": True}
