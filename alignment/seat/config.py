"""Settings of the Cas-SEAT steps (``tandem align synthesize|filter|sft``): dataclasses whose fields double as CLI
flags and YAML keys (``--config FILE.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tandem.errors import TandemError

T = TypeVar("T")


@dataclass
class SynthConfig:
    out: str = field(default="runs/seat", metadata={"help": "output folder: source.jsonl, records.jsonl, reports"})
    source_file: str | None = field(default=None, metadata={
        "help": "JSONL of problems: question, answer (gold, optional), difficulty (optional), id (optional)"})
    gym_dataset: str = field(default="gsm_symbolic", metadata={
        "help": "reasoning-gym dataset used when no source_file is given (pip install -e .[align])"})
    gym_size: int = field(default=64, metadata={"help": "problems drawn from the reasoning-gym dataset"})
    gym_seed: int = field(default=1, metadata={"help": "reasoning-gym seed"})
    teacher: str = field(default="local", metadata={
        "help": "'local' (teacher_model folder through transformers) or an OpenAI-compatible base URL"})
    teacher_model: str | None = field(default=None, metadata={
        "help": "local: model folder (default SmolLM2-135M-Instruct); URL: the served model name"})
    samples: int = field(default=3, metadata={"help": "CoT samples per problem (first: the response; all: "
                                              "self-consistency)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the extra CoT samples"})
    max_tokens: int = field(default=256, metadata={"help": "tokens per teacher completion"})
    retries: int = field(default=2, metadata={"help": "extra attempts per problem before it is recorded as failed"})
    max_question_chars: int = field(default=1200, metadata={"help": "source filter: longest question kept"})
    min_difficulty: float = field(default=0.0, metadata={"help": "source filter: lowest difficulty kept"})
    max_difficulty: float = field(default=1e9, metadata={"help": "source filter: highest difficulty kept"})

    def validate(self) -> None:
        _positive(self, "gym_size", "samples", "max_tokens", "max_question_chars")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"samples={self.samples} at temperature 0 would repeat one greedy answer; set "
                             f"temperature > 0 or samples 1")


@dataclass
class FilterConfig:
    records: str = field(default="runs/seat", metadata={"help": "the synthesize output folder (records.jsonl)"})
    out: str | None = field(default=None, metadata={"help": "where cot.jsonl, selfeval.jsonl and filter_report.json "
                                                    "go (default: the records folder)"})
    max_response_chars: int = field(default=2000, metadata={"help": "length filter on the teacher's response"})
    min_consistency: float = field(default=0.5, metadata={
        "help": "self-consistency: least share of the teacher's samples that agree with the kept answer"})
    require_gold: bool = field(default=False, metadata={"help": "drop problems without a gold answer"})

    def validate(self) -> None:
        _positive(self, "max_response_chars")
        if not 0.0 <= self.min_consistency <= 1.0:
            raise ValueError(f"min_consistency must be in [0, 1], got {self.min_consistency}")


@dataclass
class SeatSFTConfig:
    data: str = field(default="runs/seat", metadata={"help": "folder with cot.jsonl and selfeval.jsonl (filter)"})
    out: str = field(default="runs/seat_sft", metadata={"help": "output folder (TRL checkpoints, final adapter)"})
    model: str | None = field(default=None, metadata={"help": "student model folder (default SmolLM2-135M-Instruct)"})
    cot_ratio: float = field(default=0.5, metadata={
        "help": "share of chain-of-thought examples in the mix (the rest self-evaluation)"})
    examples: int = field(default=0, metadata={"help": "mixed examples to train on (0: as many as the ratio allows)"})
    epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=4, metadata={"help": "examples per step"})
    lr: float = field(default=2e-4, metadata={"help": "learning rate"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (0: full fine-tune)"})
    max_length: int = field(default=512, metadata={"help": "tokens per example"})
    seed: int = field(default=0, metadata={"help": "mixing and training seed"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps (resume point)"})
    vision: bool = field(default=False, metadata={
        "help": "vision-language student (model must be set): rows carry 'images', TRL's vision-language SFT path"})

    def validate(self) -> None:
        _positive(self, "batch_size", "max_length", "save_steps")
        if not 0.0 <= self.cot_ratio <= 1.0:
            raise ValueError(f"cot_ratio must be in [0, 1] (share of CoT examples), got {self.cot_ratio}")
        if self.vision and not self.model:
            raise ValueError("vision=true needs model: the folder of a vision-language model (none ships offline)")
        if self.epochs <= 0 or self.lr <= 0 or self.lora_r < 0 or self.examples < 0:
            raise ValueError("epochs and lr must be > 0, lora_r and examples >= 0")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def from_mapping(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build a config dataclass from a YAML mapping; unknown keys and invalid values are one-line TandemErrors."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TandemError(f"{source}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(known))}")
    cfg = cls(**values)
    try:
        cfg.validate()
    except ValueError as exc:
        raise TandemError(f"{source}: {exc}") from None
    return cfg
