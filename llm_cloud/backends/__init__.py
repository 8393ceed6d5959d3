"""LLM backends behind one protocol (:class:`~llm_cloud.backends.base.LLMBackend`), one registry.

``transformers`` is the default; ``vllm`` needs the ``[vllm]`` extra (``pip install -e ".[vllm]"``).
"""

from __future__ import annotations

from pathlib import Path

from llm_cloud.backends.base import CandidateList, LLMBackend, UnknownItemsError
from tandem.errors import TandemError

BACKENDS = ("transformers", "vllm")
VLLM_INSTALL = 'pip install -e ".[vllm]"  (then: pip uninstall -y torchvision torchaudio torchcodec triton)'

__all__ = ["BACKENDS", "CandidateList", "LLMBackend", "UnknownItemsError", "load_backend"]


def load_backend(name: str, checkpoint: str | Path, **options) -> LLMBackend:
    """The backend ``name`` serving the checkpoint folder; options go to its constructor."""
    from llm_cloud.generative.checkpoint import load_artifact

    if name not in BACKENDS:
        raise TandemError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    artifact = load_artifact(checkpoint)
    if name == "transformers":
        from llm_cloud.backends.transformers_backend import TransformersBackend

        return TransformersBackend(artifact, **options)
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise TandemError(f"backend 'vllm' needs vLLM, which is not installed; install it with "
                          f"{VLLM_INSTALL}") from None
    from llm_cloud.backends.vllm_backend import VLLMBackend

    return VLLMBackend(artifact, **options)
