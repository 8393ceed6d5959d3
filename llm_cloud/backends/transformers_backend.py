"""The default backend: the checkpoint in transformers, beam search through ``generate`` (see
:mod:`llm_cloud.generative.decode`)."""

from __future__ import annotations

import numpy as np

from llm_cloud.backends.base import CandidateList, LLMBackend
from llm_cloud.generative.checkpoint import LLMArtifact


class TransformersBackend(LLMBackend):
    name = "transformers"

    def __init__(self, artifact: LLMArtifact, batch_size: int = 8, share_prompt: bool = True,
                 progress: bool = False) -> None:
        super().__init__(artifact)
        self.model = artifact.load_model()
        self.batch_size = batch_size
        self.share_prompt = share_prompt
        self.progress = progress

    def _beam(self, histories: list[np.ndarray], n: int) -> list[CandidateList]:
        from llm_cloud.generative.decode import beam_candidates

        lists = beam_candidates(self.model, self.artifact.fmt, histories, n=n, max_items=self.artifact.max_items,
                                batch_size=self.batch_size, share_prompt=self.share_prompt, progress=self.progress)
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
