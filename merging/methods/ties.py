"""TIES-merging (arXiv 2306.01708) as a configured instance of task arithmetic: trim (keep the top-``density``
magnitudes of each delta), elect sign, disjoint mean, × ``scale``."""

from __future__ import annotations

from typing import Any, ClassVar

from merging.methods.base import register
from merging.methods.task_arithmetic import TaskArithmetic


@register
class Ties(TaskArithmetic):
    """Defaults: ``density`` 0.2 (the paper's top-20%), ``scale`` 1.0; ``sparsify`` and ``sign_election`` fixed."""

    name = "ties"
    defaults: ClassVar[dict[str, Any]] = {**TaskArithmetic.defaults, "sparsify": "magnitude", "density": 0.2,
                                          "sign_election": True}
