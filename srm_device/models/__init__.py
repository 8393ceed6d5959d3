"""Sequential recommenders, one per file, registered by name in :mod:`srm_device.models.registry`.

The names below resolve on first use (PEP 562), so reading :mod:`srm_device.models.config` (the CLI does, to build
its flags) imports no torch; asking for the registry imports, and so registers, every model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from srm_device.models.base import SequentialRecommender
    from srm_device.models.config import SRMConfig
    from srm_device.models.registry import MODELS, build_model, default_config, model_names

_HOME = {"SRMConfig": "config", "SequentialRecommender": "base", "MODELS": "registry", "build_model": "registry",
         "default_config": "registry", "model_names": "registry"}
_MODEL_FILES = ("gru4rec", "sasrec")  # each registers itself on import

__all__ = ["MODELS", "SRMConfig", "SequentialRecommender", "build_model", "default_config", "model_names"]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _HOME[name] == "registry":
        for file in _MODEL_FILES:
            importlib.import_module(f"{__name__}.{file}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
