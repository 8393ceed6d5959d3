"""What the optional training settings of :mod:`llm_cloud.train.sft` add to TRL's trainer: token pruning (RASTP or
STAMP's semantic adaptive pruning) with its warm-up, and the loss (plain, label-smoothed, or with STAMP's multi-step
auxiliary prediction)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from llm_cloud.train.sft_config import SFTRunConfig


class PruningGate:
    """Whether pruning is on at the current step: off for the first ``warmup`` fraction of the training steps.
    ``callback()`` is the ``TrainerCallback`` that moves it."""

    def __init__(self, warmup: float) -> None:
        self.warmup, self.active = warmup, warmup == 0

    def __call__(self) -> bool:
        return self.active

    def callback(self):
        from transformers import TrainerCallback

        gate = self

        class PruningWarmup(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs) -> None:
                gate.active = state.global_step >= gate.warmup * state.max_steps

        return PruningWarmup()


def pruning(cfg: SFTRunConfig, model, fmt) -> tuple[AbstractContextManager, list]:
    """The context that prunes tokens during ``trainer.train`` and the callbacks it needs (none when off)."""
    from llm_cloud.generative.rastp import rastp_chooser, token_pruning
    from llm_cloud.generative.stamp import sap_chooser

    if cfg.rastp is not None:
        opts, choose = cfg.rastp, rastp_chooser(cfg.rastp.keep)
    elif cfg.stamp is not None and cfg.stamp.keep < 1:
        opts, choose = cfg.stamp, sap_chooser(cfg.stamp.keep, fmt.codec.width, len(fmt.prefix))
    else:
        return nullcontext(), []
    gate = PruningGate(opts.warmup)
    return token_pruning(model, opts.layer, choose, gate), [gate.callback()]


def trainer_class(cfg: SFTRunConfig, sft_trainer: type, fused_loss: bool, model, fmt) -> type:
    """TRL's trainer, or a subclass with transformers' own loss (label smoothing, ``fused_loss: false``, or a profile
    whose head TRL's fused loss cannot read), or with STAMP's auxiliary loss added (its heads are attached to
    ``model`` here)."""
    if cfg.stamp is not None and cfg.stamp.steps:
        from llm_cloud.generative.stamp import attach_heads

        heads = attach_heads(model, cfg.stamp.steps)
        return _stamp_trainer(sft_trainer, heads, fmt.codec.width, cfg.stamp.weight)
    if fused_loss and cfg.fused_loss and not cfg.label_smoothing:  # label smoothing needs the full logits
        return sft_trainer
    return _plain_loss_trainer(sft_trainer)


def _plain_loss_trainer(sft_trainer: type) -> type:
    """SFTTrainer with transformers' own loss (labels through the model's forward; label smoothing when set).

    TRL 1.16 computes the loss through a fused LM head that reads ``lm_head.weight`` and ``lm_head.bias`` itself. With
    PEFT's trainable tokens on a tied head (the smollm profile) that head is a wrapper whose trained rows live outside
    ``weight``, so the fused path fails (no ``bias``) and would miss the trained rows anyway. With label smoothing TRL
    would run a second forward pass for the full logits.
    """
    from transformers import Trainer

    class PlainLossSFTTrainer(sft_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return PlainLossSFTTrainer


def _stamp_trainer(sft_trainer: type, heads, width: int, weight: float) -> type:
    """SFTTrainer whose loss is transformers' next-token loss plus ``weight`` times STAMP's multi-step auxiliary loss
    on the final hidden states of the same forward (caught by a hook on the final norm)."""
    from transformers import Trainer

    from llm_cloud.generative.stamp import final_hidden_hook, multi_step_loss

    class STAMPSFTTrainer(sft_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inner: Any = self.accelerator.unwrap_model(model)
            labels = inputs["labels"]  # popped by transformers' loss when label smoothing is on
            store: dict = {}
            handle = final_hidden_hook(inner, store)
            try:
                loss, outputs = Trainer.compute_loss(self, model, inputs, return_outputs=True,
                                                     num_items_in_batch=num_items_in_batch)
            finally:
                handle.remove()
            aux = multi_step_loss(store["hidden"], labels, inner.get_output_embeddings(), heads, width)
            loss = loss + weight * aux
            return (loss, outputs) if return_outputs else loss

    return STAMPSFTTrainer
