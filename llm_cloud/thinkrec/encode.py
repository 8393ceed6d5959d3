"""Token ids of ThinkRec examples, built the same way for training and for scoring (arXiv 2505.15091).

An example is ``chat(prompt) + [trace + "\\n"] + "Answer:" + " Yes|No" + <eos>``, with the parts tokenised
separately and concatenated, so the answer token always sits right after the ids of ``Answer:`` and the yes-logit
read at scoring time (after the same ids) is the one the loss trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_cloud.thinkrec.loss import IGNORE
from llm_cloud.thinkrec.prompts import ANSWER, yes_no_ids
from llm_common.teacher import chat_text


@dataclass
class Encoder:
    tokenizer: object
    max_length: int = 768

    def __post_init__(self) -> None:
        self.yes_id, self.no_id = yes_no_ids(self.tokenizer)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompt: str) -> list[int]:
        return self._ids(chat_text(self.tokenizer, prompt))

    def answer_prefix(self, trace: str | None) -> list[int]:
        return self._ids(f"{trace.strip()}\n{ANSWER}" if trace else ANSWER)

    def example(self, prompt: str, label: int, trace: str | None = None) -> dict | None:
        """``input_ids``, ``labels`` (−100 on the prompt), ``answer_pos`` (where the answer is predicted) and
        ``target``; None when it is longer than ``max_length``."""
        p, c = self.prompt_ids(prompt), self.answer_prefix(trace)
        tail = [self.yes_id if label else self.no_id, self.tokenizer.eos_token_id]
        ids = p + c + tail
        if len(ids) > self.max_length:
            return None
        return {"input_ids": ids, "labels": [IGNORE] * len(p) + c + tail, "answer_pos": len(p) + len(c) - 1,
                "target": float(label)}

    def scoring_ids(self, prompt: str, trace: str | None = None) -> list[int]:
        """The ids after which the answer token is predicted (the newest ``max_length`` of them)."""
        return (self.prompt_ids(prompt) + self.answer_prefix(trace))[-self.max_length:]


def pad_batch(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids (B, T), attention_mask (B, T), position_ids (B, T)) of ragged rows, padded on one side."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[b, sl] = torch.tensor(r, dtype=torch.long)
        mask[b, sl] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # (B, T): left padding must not shift the real positions
    return ids, mask, positions
