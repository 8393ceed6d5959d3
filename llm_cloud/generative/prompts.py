"""How a history becomes the LM's tokens: a fixed prefix, then per item its L+1 code tokens and an optional suffix.

- ``tiny`` (codes only, TIGER arXiv 2305.05065): prefix ``<bos>``, no suffix, so item ``i`` is just its codes.
- ``smollm`` (titles and codes): prefix is a one-line instruction in SmolLM2's own tokens, and each item's codes are
  followed by the tokens of `` <title>\\n``, so the model reads what it was shown and still answers in codes.

Only code tokens are ever targets: a title follows its own codes, so it carries no information about the next item.
The format is saved with the checkpoint as ``prompt.json`` (token ids, not text), so decoding needs no catalogue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm_cloud.generative.tokens import SemanticIdCodec
from tandem.io import atomic_write_json

IGNORE = -100
PROMPT_FILE = "prompt.json"
INSTRUCTION = "Movies the user watched, oldest first, each as its semantic ID and title. Predict the next one.\n"


@dataclass
class PromptFormat:
    codec: SemanticIdCodec
    prefix: list[int]  # token ids before the first item
    suffix: list[list[int]] | None = None  # per item id (row 0 unused): tokens after its codes; None = codes only

    @classmethod
    def codes_only(cls, codec: SemanticIdCodec) -> PromptFormat:
        return cls(codec=codec, prefix=[codec.bos_id])

    @classmethod
    def titled(cls, codec: SemanticIdCodec, tokenizer, titles: list[str], max_title_tokens: int = 16,
               instruction: str = INSTRUCTION) -> PromptFormat:
        """``titles`` has one entry per item id (index 0 unused); each is cut to ``max_title_tokens`` tokens."""
        prefix = tokenizer(instruction, add_special_tokens=False)["input_ids"]
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        suffix = [[]] + [tokenizer(" " + t.strip(), add_special_tokens=False)["input_ids"][:max_title_tokens] + newline
                         for t in titles[1:]]
        return cls(codec=codec, prefix=prefix, suffix=suffix)

    @property
    def max_item_tokens(self) -> int:
        """The most tokens one item takes (codes plus the longest suffix)."""
        return self.codec.width + max((len(s) for s in self.suffix), default=0) if self.suffix else self.codec.width

    def max_length(self, max_items: int) -> int:
        """Tokens of the prefix, ``max_items`` history items and the target, plus one spare."""
        return len(self.prefix) + (max_items + 1) * self.max_item_tokens + 1

    def item_ids(self, item: int) -> list[int]:
        codes = self.codec.item_tokens[item].tolist()  # (L+1,)
        return codes + self.suffix[item] if self.suffix else codes

    def history_ids(self, items: np.ndarray) -> list[int]:
        """The prompt for decoding: it ends where the next item's codes begin."""
        out = list(self.prefix)
        for item in np.asarray(items, dtype=np.int64).tolist():
            out += self.item_ids(item)
        return out

    def example(self, items: np.ndarray, first_target: int) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one window: the codes of ``items[first_target:]`` are the targets."""
        ids, labels = list(self.prefix), [IGNORE] * len(self.prefix)
        width = self.codec.width
        for pos, item in enumerate(np.asarray(items, dtype=np.int64).tolist()):
            tokens = self.item_ids(item)
            ids += tokens
            target = tokens[:width] if pos >= first_target else [IGNORE] * width
            labels += target + [IGNORE] * (len(tokens) - width)
        return ids, labels

    def save(self, folder: Path) -> None:
        atomic_write_json(Path(folder) / PROMPT_FILE, {"prefix": self.prefix, "suffix": self.suffix})

    @classmethod
    def load(cls, folder: Path, codec: SemanticIdCodec) -> PromptFormat:
        """The saved format, or codes only for checkpoints written before formats were saved."""
        path = Path(folder) / PROMPT_FILE
        if not path.is_file():
            return cls.codes_only(codec)
        raw = json.loads(path.read_text())
        return cls(codec=codec, prefix=list(raw["prefix"]), suffix=raw["suffix"])
