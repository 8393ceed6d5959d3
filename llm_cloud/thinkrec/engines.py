"""A ThinkRec folder (arXiv 2505.15091) loaded on either engine: :class:`~llm_cloud.thinkrec.model.ThinkRecModel`
(PEFT adapters on one transformers model) or :class:`~llm_cloud.thinkrec.vllm_scorer.VLLMThinkRec` (each adapter a
per-request LoRA). Both answer ``p_yes``, ``think``, ``adapter_for`` and ``close``; the service's reasoner and
``tandem eval thinkrec`` load through here."""

from __future__ import annotations

from pathlib import Path

from tandem.errors import TandemError

ENGINES = ("transformers", "vllm")


def load_model(folder: str | Path, engine: str = "transformers", extra_adapters: dict[str, str | Path] | None = None):
    """The folder's model on ``engine``, with ``extra_adapters`` (name -> LoRA folder) served beside its own."""
    if engine not in ENGINES:
        raise TandemError(f"unknown reasoning engine {engine!r}; choose {' or '.join(ENGINES)}")
    if engine == "vllm":
        from llm_cloud.thinkrec.vllm_scorer import VLLMThinkRec

        return VLLMThinkRec(folder, extra_adapters=extra_adapters)
    from llm_cloud.thinkrec.model import ThinkRecModel

    model = ThinkRecModel.load(folder)
    for name, path in (extra_adapters or {}).items():
        model.model.load_adapter(str(path), adapter_name=name)
    return model
