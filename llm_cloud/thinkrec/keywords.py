"""Keyword summaries of items (ThinkRec arXiv 2505.15091 §thinking activation): up to 10 keywords per item, written
by an LLM from the item's metadata and cached on disk.

The generator is anything with the LLM backends' text method, ``generate(prompts, max_new_tokens) -> list[str]``
(:class:`~llm_cloud.backends.base.LLMBackend`, and the teachers of :mod:`llm_common.teacher`: a local transformers
model or any OpenAI-compatible endpoint such as ``vllm serve``). The cache is one JSON file, ``{item id: {keywords,
generator}}``, rewritten atomically after every batch, so an interrupted run keeps what it had and a rerun only asks
for the items still missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from tandem.io import atomic_write_json

MAX_KEYWORDS = 10
STOP = {"movie", "film", "the", "genre", "theme", "keywords"}
PROMPT = ("Movie: {text}\nList up to 10 short keywords for this movie (genre, themes, mood, setting, era), "
          "separated by commas. Reply with the keywords only.")


class TextGenerator(Protocol):
    name: str

    def generate(self, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
        """One greedy completion per prompt."""


def parse_keywords(text: str, limit: int = MAX_KEYWORDS) -> list[str]:
    """Comma-, semicolon-, bar- or line-separated keywords: lower-cased, stripped of bullets, numbering, quotes and
    ``label:`` prefixes (small models write ``genre: drama``), deduplicated, 3 to 40 characters and at most 4 words
    each, the first ``limit`` kept. Never raises."""
    out: list[str] = []
    for part in re.split(r"[,;|\n]", text or ""):
        word = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", part).strip(" \t\"'`.:").lower()
        word = re.sub(r"^[a-z ]{2,12}:\s*", "", word).strip(" \t\"'`.:")
        if 3 <= len(word) <= 40 and len(word.split()) <= 4 and word not in STOP and word not in out:
            out.append(word)
        if len(out) == limit:
            break
    return out


class KeywordCache:
    """Item id -> keywords, backed by ``path``; ``hits``/``generated`` count what the last calls reused and asked."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.hits = 0
        self.generated = 0

    def __contains__(self, item: int) -> bool:
        return str(int(item)) in self.rows

    def keywords(self, item: int) -> list[str]:
        """Cached keywords of ``item`` ([] when it has none yet)."""
        row = self.rows.get(str(int(item)))
        return list(row["keywords"]) if row else []

    def ensure(self, items: Iterable[int], text: Callable[[int], str], generator: TextGenerator,
               batch_size: int = 16, max_new_tokens: int = 48, progress: bool = False) -> dict[int, list[str]]:
        """Keywords for every item in ``items``, generating (in batches, saving after each) only the missing ones;
        ``text(item)`` is the metadata the LLM reads (title, year, genres)."""
        from tqdm.auto import tqdm

        wanted = list(dict.fromkeys(int(i) for i in items))
        missing = [i for i in wanted if i not in self]
        self.hits += len(wanted) - len(missing)
        bar = tqdm(total=len(missing), desc="keywords", unit="item", disable=not progress)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            replies = generator.generate([PROMPT.format(text=text(i)) for i in chunk], max_new_tokens=max_new_tokens)
            for item, reply in zip(chunk, replies):
                self.rows[str(item)] = {"keywords": parse_keywords(reply), "raw": reply, "generator": generator.name}
            self.generated += len(chunk)
            atomic_write_json(self.path, self.rows)
            bar.update(len(chunk))
        bar.close()
        return {i: self.keywords(i) for i in wanted}
