"""The merge recipe, in the spirit of mergekit's YAML: which LoRA adapters, which method with which parameters, which
output rank and where. Validated with pydantic at the edge; every error is one line naming field, value and rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tandem.config import read_yaml_mapping
from tandem.errors import TandemError


class AdapterSpec(BaseModel):
    """One input adapter: a PEFT LoRA folder and its merge weight."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
    weight: float = Field(1.0, description="merge weight of this adapter (default 1.0)")
    calibration: str | None = Field(None, description="JSONL of this expert's own domain, one {prompt, completion} "
                                    "per line (CAPS attribution; default: the shared calibration file)")


class CalibrationOptions(BaseModel):
    """How much calibration data the data-driven methods use and how CKI's learned local term is fitted."""

    model_config = ConfigDict(extra="forbid")

    max_examples: int = Field(32, ge=1, description="examples read from each calibration file")
    batch_size: int = Field(8, ge=1, description="examples per forward pass")
    steps: int = Field(30, ge=0, description="Adam steps fitting CKI's learned local term (0: data-free rule)")
    lr: float = Field(0.05, gt=0, description="learning rate of those steps")


class MergeConfig(BaseModel):
    """A LoRA merge: ``adapters`` merged on exact ΔW with ``method`` and ``parameters``, re-factorised to ``rank``."""

    model_config = ConfigDict(extra="forbid")

    base_model: str | None = Field(None, description="expected base_model_name_or_path of every adapter (checked)")
    adapters: list[AdapterSpec] = Field(min_length=2, description="at least two adapters with weights")
    method: str = Field(description="registered merge method, e.g. linear, ties, dare_ties, cki, caps")
    parameters: dict[str, Any] = Field(default_factory=dict, description="method parameters, e.g. density, scale")
    calibration: str | None = Field(None, description="shared calibration JSONL ({prompt, completion} per line) for "
                                    "methods that use it: CKI's learned local term, CAPS's attribution and CKA")
    calibration_options: CalibrationOptions = Field(default_factory=CalibrationOptions,
                                                    description="calibration sizes and CKI fitting steps")
    rank: int | None = Field(None, ge=1,
                             description="output LoRA rank (default: the adapters' r, the largest if they differ)")
    out: str = Field(description="output adapter folder (written atomically)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from merging.methods import METHODS

        if value not in METHODS:
            raise ValueError(f"unknown merge method; known methods are {', '.join(sorted(METHODS))}")
        return value


def first_error(exc: ValidationError) -> str:
    """One line: field, value, rule."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        nested = {"adapters": AdapterSpec, "calibration_options": CalibrationOptions}
        model = nested.get(str(err["loc"][0]), MergeConfig) if len(err["loc"]) > 1 else MergeConfig
        return f"unknown key {where!r}; valid keys there are {', '.join(model.model_fields)}"
    if err["type"] == "missing":
        return f"{where} is required"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}={err.get('input')!r}: {msg}"


def make_config(values: dict[str, Any], source: str = "merge config") -> MergeConfig:
    """Validate a dict into a MergeConfig, or raise a one-line TandemError."""
    try:
        return MergeConfig(**values)
    except ValidationError as exc:
        raise TandemError(f"{source} {first_error(exc)}; see `tandem merge --help`") from None


def load_config(path: str | Path) -> MergeConfig:
    """Read a merge YAML (see :class:`MergeConfig`); a missing/invalid file is a one-line TandemError."""
    raw = read_yaml_mapping(path, "merge config", "pass --config with a YAML file")
    return make_config(raw, source=f"merge config {path}:")
