"""The ThinkRec model at serving and evaluation time (arXiv 2505.15091): SmolLM2 with a general LoRA adapter and one
per user group, a gate that picks among them per request, yes-probabilities, and reasoning traces.

Folder layout (written by :mod:`pipelines.thinkrec_build`)::

    thinkrec.json      base model folder, max_length, counts
    general/           the general adapter (bare labels + teacher traces)
    experts/g0 ...     one adapter per user group (continued from general on that group's samples)
    clusters.json      the user clustering (:class:`~llm_cloud.thinkrec.experts.Clustering`)
    keywords.json      the keyword cache (:class:`~llm_cloud.thinkrec.keywords.KeywordCache`)

Adapter switching is model-wide state, so calls are serialised by a lock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llm_cloud.thinkrec.encode import Encoder, pad_batch
from llm_cloud.thinkrec.experts import Clustering, MixtureCache, Route, pick_adapter
from llm_cloud.thinkrec.keywords import KeywordCache
from llm_cloud.thinkrec.prompts import item_line, rec_prompt, strip_answer
from tandem.errors import TandemError

META = "thinkrec.json"
GENERAL = "general"


@dataclass
class ItemTexts:
    """Item lines for prompts: the catalogue's titles with cached keywords; ``meta`` is what the keyword LLM reads."""

    catalogue: object
    keywords: KeywordCache

    def line(self, item: int) -> str:
        return item_line(self.catalogue.title(item), self.keywords.keywords(item))

    def meta(self, item: int) -> str:
        return self.catalogue.text(item)

    def prompt(self, history: list[int] | tuple[int, ...], item: int, think: bool = False) -> str:
        return rec_prompt([self.line(i) for i in history], self.line(item), think=think)


class ThinkRecModel:
    """Load with :meth:`load`; score with :meth:`p_yes`, reason with :meth:`think`, route with :meth:`adapter_for`."""

    def __init__(self, model, tokenizer, max_length: int, clustering: Clustering | None,
                 experts: list[str]) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.enc = Encoder(tokenizer, max_length)
        self.clustering = clustering
        self.experts = experts
        self.mixtures = MixtureCache(model)
        self.lock = threading.Lock()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def load(cls, folder: str | Path) -> ThinkRecModel:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder)
        if not (folder / META).is_file():
            raise TandemError(f"{folder} is not a ThinkRec folder (no {META}); build one with bench/thinkrec.py")
        meta = json.loads((folder / META).read_text())
        base = AutoModelForCausalLM.from_pretrained(meta["base_model"], dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(folder / GENERAL), adapter_name=GENERAL)
        experts = sorted(p.name for p in (folder / "experts").glob("g*") if (p / "adapter_config.json").is_file())
        for name in experts:
            model.load_adapter(str(folder / "experts" / name), adapter_name=name)
        clustering = (Clustering.from_json(json.loads((folder / "clusters.json").read_text()))
                      if experts and (folder / "clusters.json").is_file() else None)
        tokenizer = AutoTokenizer.from_pretrained(meta.get("tokenizer") or meta["base_model"])  # as VLLMThinkRec
        return cls(model, tokenizer, int(meta.get("max_length", 768)), clustering, experts)

    def close(self) -> None:
        """Nothing to release (the API :class:`~llm_cloud.thinkrec.vllm_scorer.VLLMThinkRec` shares)."""

    def adapter_for(self, user: np.ndarray | None) -> tuple[str, Route | None]:
        """The adapter for a user vector (d,): its group's, the general one, or the exact weighted mixture of the
        group adapters' ΔW. Without experts (or a vector) it is the general adapter."""
        return pick_adapter(self.clustering, self.experts, user, GENERAL, self._mixture)

    def _mixture(self, weights: np.ndarray) -> str:
        with self.lock:
            return self.mixtures.get(self.experts, weights)

    def _use(self, adapter: str | None) -> None:
        if adapter is not None:
            self.model.set_adapter(adapter)

    @torch.no_grad()
    def p_yes(self, prompts: list[str], traces: list[str | None] | None = None, adapter: str | None = GENERAL,
              batch_size: int = 8, progress: bool = False) -> np.ndarray:
        """(n,) p(yes) = softmax over the " Yes"/" No" logits after each prompt (and its trace) and ``Answer:``;
        ``adapter`` None runs the model as it is (a plain base model: the untrained student)."""
        traces = traces or [None] * len(prompts)
        rows = [self.enc.scoring_ids(p, t) for p, t in zip(prompts, traces)]
        out = []
        with self.lock:
            self._use(adapter)
            for i in tqdm(range(0, len(rows), batch_size), desc="p(yes)", disable=not progress):
                ids, mask, pos = pad_batch(rows[i:i + batch_size], self.pad_id, left=True)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
                pair = logits[:, -1, [self.enc.yes_id, self.enc.no_id]].float()  # (b, 2)
                out.append(torch.softmax(pair, -1)[:, 0])
        return torch.cat(out).numpy() if out else np.zeros(0)

    @torch.no_grad()
    def think(self, prompts: list[str], adapter: str | None = GENERAL, max_new_tokens: int = 96,
              batch_size: int = 8, progress: bool = False) -> list[str]:
        """Greedy reasoning traces for thinking prompts (the text before the answer line)."""
        out = []
        with self.lock:
            self._use(adapter)
            for i in tqdm(range(0, len(prompts), batch_size), desc="think", disable=not progress):
                rows = [self.enc.prompt_ids(p) for p in prompts[i:i + batch_size]]
                ids, mask, _ = pad_batch(rows, self.pad_id, left=True)
                gen = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                          max_new_tokens=max_new_tokens, pad_token_id=self.pad_id)  # (b, T + new)
                texts = self.tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
                out.extend(strip_answer(t) for t in texts)
        return out
