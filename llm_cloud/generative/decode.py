"""Top-N items by beam search constrained to the trie of valid codes (TIGER, arXiv 2305.05065).

Decoding is transformers' own ``generate`` with ``num_beams = num_return_sequences = N``, ``prefix_allowed_tokens_fn``
from :class:`~llm_cloud.generative.trie.CodeTrie`, exactly L+1 new tokens, and ``length_penalty=0`` so that a
candidate's score is its summed log-probability (log-softmax over the whole vocabulary, taken before the trie mask).

Users are batched by prompt length in tokens, so no batch needs padding and no position id depends on a padding scheme.
With ``share_prompt`` (default) the prompt is run once per user and its KV cache is repeated for the N beams before
``generate`` continues from it; otherwise ``generate`` runs the prompt once per beam (N times the work, same result).

Every returned item is valid and unique: a beam that fell off the trie (possible only when fewer valid prefixes than
beams exist, in which case beam search fills the beam with ``-inf`` candidates and the trie sends them to ``<eos>``)
maps to no item and is dropped, as is any beam with a non-finite score or a score below ``-1e8`` (the start-up
penalty of the idle beams). Duplicates keep their first, highest-scoring occurrence. So a list can be shorter than N
when the trie holds fewer reachable items than N.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from llm_cloud.generative.prompts import PromptFormat
from llm_cloud.generative.tokens import SemanticIdCodec
from llm_cloud.generative.trie import CodeTrie

MIN_SCORE = -1e8


@dataclass
class Candidates:
    """One user's top-N list: item ids (n,) best first and their sequence log-probabilities (n,)."""

    items: np.ndarray
    scores: np.ndarray


def prompt_ids(fmt: PromptFormat, histories: list[np.ndarray], max_items: int) -> list[list[int]]:
    """The decoding prompt of each history: its last ``max_items`` items in the format."""
    return [fmt.history_ids(np.asarray(h, dtype=np.int64)[-max_items:]) for h in histories]


def beam_candidates(model, fmt: PromptFormat, histories: list[np.ndarray], n: int = 100, max_items: int = 50,
                    batch_size: int = 8, trie: CodeTrie | None = None, share_prompt: bool = True,
                    progress: bool = False) -> list[Candidates]:
    """The top-``n`` items for each history (the last ``max_items`` items are the prompt)."""
    import torch
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"n (candidates per user) must be >= 1, got {n}")
    codec = fmt.codec
    beams = max(n, 2)  # one beam would be greedy search, which reports no sequence scores
    trie = trie or CodeTrie(codec.item_tokens, dead_end=codec.eos_id)
    width = codec.width
    prompts = prompt_ids(fmt, histories, max_items)
    by_len: dict[int, list[int]] = defaultdict(list)
    for user, p in enumerate(prompts):
        by_len[len(p)].append(user)
    out: list[Candidates | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    model.eval()
    bar = tqdm(total=len(prompts), unit="user", desc="beam search", disable=not progress)
    for users_same_len in by_len.values():
        for lo in range(0, len(users_same_len), batch_size):
            users = users_same_len[lo:lo + batch_size]
            ids = torch.tensor([prompts[u] for u in users], device=device)  # (b, t)
            t = ids.shape[1]

            def allowed(batch_id: int, seq: torch.Tensor, t: int = t) -> list[int]:
                return trie.allowed(tuple(seq[t:].tolist()))

            extra = {}
            if share_prompt and t > 1:
                with torch.no_grad():
                    cache = model(input_ids=ids[:, :-1], use_cache=True).past_key_values  # prompt but its last token
                cache.batch_repeat_interleave(beams)  # (b*beams, ...) per layer, the order generate expands to
                extra["past_key_values"] = cache
            gen = model.generate(
                **extra, input_ids=ids, attention_mask=torch.ones_like(ids), num_beams=beams,
                num_return_sequences=beams, max_new_tokens=width, min_new_tokens=0, do_sample=False,
                length_penalty=0.0, early_stopping=True, prefix_allowed_tokens_fn=allowed, output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=codec.pad_id, eos_token_id=codec.eos_id, bos_token_id=codec.bos_id,
            )
            seqs = gen.sequences[:, t:].cpu().numpy()  # (b*beams, <=width)
            scores = gen.sequences_scores.float().cpu().numpy()  # (b*beams,)
            for row, user in enumerate(users):
                rows = slice(row * beams, (row + 1) * beams)
                out[user] = collect_beams(codec, seqs[rows], scores[rows], n)
            bar.update(len(users))
    bar.close()
    return out  # type: ignore[return-value]


def collect_beams(codec: SemanticIdCodec, seqs: np.ndarray, scores: np.ndarray, n: int) -> Candidates:
    """Beams (beams, <=L+1) and scores (beams,) -> up to ``n`` valid, unique items sorted by score."""
    order = np.argsort(-scores, kind="stable")
    items, kept, seen = [], [], set()
    for j in order:
        s = float(scores[j])
        if not np.isfinite(s) or s < MIN_SCORE or seqs.shape[1] != codec.width:
            continue
        item = codec.decode_item(seqs[j])
        if item is None or item in seen:
            continue
        if len(items) == n:
            break
        seen.add(item)
        items.append(item)
        kept.append(s)
    return Candidates(items=np.array(items, dtype=np.int64), scores=np.array(kept, dtype=np.float64))
