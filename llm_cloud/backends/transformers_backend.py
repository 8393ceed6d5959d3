"""The default backend: the checkpoint in transformers. Candidate lists come from the tensorised trie beam search
(:mod:`llm_cloud.generative.fast_decode`); ``search="reference"`` uses ``generate`` with ``prefix_allowed_tokens_fn``
(:mod:`llm_cloud.generative.decode`), which gives the same lists and is kept for tests and benchmarks."""

from __future__ import annotations

from typing import Literal

import numpy as np

from llm_cloud.backends.base import CandidateList, LLMBackend
from llm_cloud.generative.checkpoint import LLMArtifact

SEARCHES = ("fast", "reference")


class TransformersBackend(LLMBackend):
    name = "transformers"

    def __init__(self, artifact: LLMArtifact, batch_size: int = 8, share_prompt: bool = True,
                 progress: bool = False, search: Literal["fast", "reference"] = "fast") -> None:
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
        super().__init__(artifact)
        self.model = artifact.load_model()
        self.batch_size = batch_size
        self.share_prompt = share_prompt  # the reference search only; the fast one always shares the prompt
        self.progress = progress
        self.search = search
        self._tables = None  # the trie as tensors, built on first use

    def _beam(self, histories: list[np.ndarray], n: int) -> list[CandidateList]:
        kw = dict(n=n, max_items=self.artifact.max_items, batch_size=self.batch_size, progress=self.progress)
        if self.search == "reference":
            from llm_cloud.generative.decode import beam_candidates

            lists = beam_candidates(self.model, self.artifact.fmt, histories, share_prompt=self.share_prompt, **kw)
        else:
            from llm_cloud.generative.fast_decode import TrieTables, fast_beam_candidates

            if self._tables is None:
                self._tables = TrieTables.build(self.artifact.codec.item_tokens)
            lists = fast_beam_candidates(self.model, self.artifact.fmt, histories, tables=self._tables, **kw)
        return [CandidateList(c.items, c.scores) for c in lists]

    def generate(self, prompts: list[str], max_new_tokens: int = 64, exact_length: bool = False) -> list[str]:
        import torch

        tok = self.artifact.tokenizer
        out = []
        for prompt in prompts:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]  # (1, t)
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=max_new_tokens, pad_token_id=self.artifact.codec.pad_id,
                                          min_new_tokens=max_new_tokens if exact_length else 0)
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        return out
