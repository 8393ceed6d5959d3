"""The merge methods; importing this package fills the registry (one module per method)."""

from merging.methods import caps, cki, dare, linear, task_arithmetic, ties  # noqa: F401  (registration)
from merging.methods.base import METHODS, MergeContext, MergeMethod, make_method, register
from merging.state_dict import merge_state_dicts

__all__ = ["METHODS", "MergeContext", "MergeMethod", "make_method", "merge_state_dicts", "register"]
