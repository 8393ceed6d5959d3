"""Settings of an AdaPO run (arXiv 2508.09155) on TRL's GRPO: a dataclass whose fields carry ``help`` metadata so
they can double as CLI flags and YAML keys."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdapoConfig:
    model: str | None = field(default=None, metadata={"help": "path to a local causal LM folder (the policy)"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "folder of the tokenizer, when it is not saved with the policy (default: the policy's folder)"})
    data: str | None = field(default=None, metadata={"help": "JSONL with 'question' and 'answer' per line"})
    out: str = field(default="runs/adapo", metadata={
        "help": "output folder: TRL checkpoints, metrics.jsonl, adapo_report.json"})
    steps: int = field(default=100, metadata={"help": "optimizer steps (GRPO max_steps)"})
    num_generations: int = field(default=4, metadata={"help": "rollouts per prompt (GRPO group size)"})
    per_device_batch: int = field(default=4, metadata={
        "help": "completions per step; a multiple of num_generations"})
    max_completion_length: int = field(default=128, metadata={"help": "tokens per rollout"})
    lr: float = field(default=1e-5, metadata={"help": "learning rate"})
    beta0: float = field(default=0.04, metadata={
        "help": "initial KL coefficient β (> 0: TRL builds the reference model only when β != 0)"})
    adaptive_reward: bool = field(default=True, metadata={
        "help": "adaptive sub-task weights (False: fixed weights 1, 1, 1, the baseline)"})
    dynamic_kl: bool = field(default=True, metadata={
        "help": "reward-gap dynamic β (False: GRPO's fixed β)"})
    kl_target_gap: float = field(default=1.0, metadata={
        "help": "dynamic β: reward gap (final-right minus final-wrong) below which β grows"})
    kl_rate: float = field(default=0.5, metadata={"help": "dynamic β: step size of the log-β update"})
    window: int = field(default=256, metadata={"help": "recent outcomes the adaptive weights are computed from"})
    seed: int = field(default=0, metadata={"help": "training seed"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on q/k/v/o_proj (0: full fine-tune)"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps (resume point)"})

    def validate(self) -> None:
        for name in ("steps", "num_generations", "per_device_batch", "max_completion_length", "window",
                     "save_steps"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}; pass a positive integer")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO needs a group to compare), got "
                             f"{self.num_generations}; use 2 or more")
        if self.per_device_batch % self.num_generations:
            fix = (self.per_device_batch // self.num_generations + 1) * self.num_generations
            raise ValueError(f"per_device_batch must be a multiple of num_generations ({self.num_generations}), got "
                             f"{self.per_device_batch}; use e.g. {fix}")
        if self.beta0 <= 0:
            raise ValueError(f"beta0 must be > 0, got {self.beta0}; TRL only builds the reference model when "
                             f"beta != 0, so use e.g. 0.04")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}; use e.g. 1e-5")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampled rollouts, got {self.temperature}; use e.g. 1.0")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}; use 0 for a full fine-tune or e.g. 8")
        if self.kl_target_gap <= 0 or self.kl_rate < 0:
            raise ValueError(f"need kl_target_gap > 0 and kl_rate >= 0, got {self.kl_target_gap} and "
                             f"{self.kl_rate}; use 1.0 and 0.5")
        if not self.model:
            raise ValueError("model must be set, got None; pass the path of a local causal LM folder")
        if not self.data:
            raise ValueError("data must be set, got None; pass a JSONL file with 'question' and 'answer' per line")
