"""The one registry of sequential recommenders, keyed by lower-case name."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, TypeVar

from srm_device.models.config import SRMConfig

if TYPE_CHECKING:
    from srm_device.models.base import SequentialRecommender

M = TypeVar("M", bound="type[SequentialRecommender]")
MODELS: dict[str, type[SequentialRecommender]] = {}


def register(cls: M) -> M:
    MODELS[cls.name] = cls
    return cls


def model_names() -> list[str]:
    return sorted(MODELS)


def default_config(name: str, **overrides) -> SRMConfig:
    """The model's default config (shared defaults plus its own), then ``overrides`` that are not None."""
    base = dataclasses.replace(SRMConfig(), **MODELS[name].default_overrides)
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def build_model(name: str, n_items: int, config: SRMConfig) -> SequentialRecommender:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models are {', '.join(model_names())}")
    return MODELS[name](n_items, config)
