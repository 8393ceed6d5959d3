"""Tensorised trie-constrained beam search for fixed-depth semantic IDs (TIGER, arXiv 2305.05065).

The same search as :func:`llm_cloud.generative.decode.beam_candidates` (transformers' ``generate`` with
``prefix_allowed_tokens_fn``, the reference), without a Python call per beam per step:

- the trie becomes per-depth tables built once per catalogue (:class:`TrieTables`): for each prefix state at depth d,
  its allowed tokens and the states they lead to, padded to the largest fan-out at that depth;
- each step is one forward over all live beams of all users in the batch, from a KV cache in which the prompt was run
  once per user and repeated for its beams; then a log-softmax over the whole vocabulary (taken before the mask, as in
  the reference), a gather of the allowed tokens, and one top-k per user over (beam x allowed token);
- no Python loop over beams or users inside a step.

Scores are summed log-probabilities (the reference's ``length_penalty=0``). Beam search keeps the B best partial codes
at every depth exactly as the reference does, so the lists agree up to floating-point ties.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicLayer

from llm_cloud.generative.decode import Candidates, prompt_ids
from llm_cloud.generative.prompts import PromptFormat


@dataclass
class TrieTables:
    """The trie of item codes (N+1, W) as tensors. Depth d has ``n_states[d]`` prefixes (depth 0: the empty one);
    ``tokens[d]`` (n_states[d], F_d) holds the tokens allowed after each, padded with -1, and ``nxt[d]`` (same shape)
    the prefix state each token leads to. After the last depth a state is an item: ``items`` (n_states[W],) maps it to
    its item id."""

    tokens: list  # W tensors (n_states[d], F_d) int64, -1 = padding
    nxt: list  # W tensors (n_states[d], F_d) int64
    items: object  # (n_states[W],) int64 item ids

    @classmethod
    def build(cls, item_tokens: np.ndarray) -> TrieTables:
        paths = np.asarray(item_tokens[1:], dtype=np.int64)  # (N, W); row 0 of the table is padding
        n, width = paths.shape
        state = np.zeros(n, dtype=np.int64)  # each item's prefix state at the current depth
        tokens, nxt = [], []
        for d in range(width):
            pairs = state * (paths[:, d].max() + 1) + paths[:, d]  # (N,) one key per (state, token)
            uniq, first, child = np.unique(pairs, return_index=True, return_inverse=True)
            parent, tok = state[first], paths[first, d]  # (S',) per distinct child prefix
            children: dict[int, list[int]] = defaultdict(list)
            for c, p in enumerate(parent.tolist()):
                children[p].append(c)
            n_states = int(state.max()) + 1
            fan = max(len(v) for v in children.values())
            t = np.full((n_states, fan), -1, dtype=np.int64)
            s = np.zeros((n_states, fan), dtype=np.int64)
            for p, cs in children.items():
                t[p, : len(cs)] = tok[cs]
                s[p, : len(cs)] = cs
            tokens.append(torch.from_numpy(t))
            nxt.append(torch.from_numpy(s))
            state = child.reshape(-1)
        items = np.zeros(int(state.max()) + 1, dtype=np.int64)
        items[state] = np.arange(1, n + 1)  # a full code names one item (the trailing level makes codes unique)
        return cls(tokens, nxt, torch.from_numpy(items))


def fast_beam_candidates(model, fmt: PromptFormat, histories: list[np.ndarray], n: int = 100, max_items: int = 50,
                         batch_size: int = 8, tables: TrieTables | None = None,
                         progress: bool = False) -> list[Candidates]:
    """The top-``n`` items for each history, as :func:`~llm_cloud.generative.decode.beam_candidates` gives them."""
    from tqdm.auto import tqdm

    if n < 1:
        raise ValueError(f"n (candidates per user) must be >= 1, got {n}")
    tables = tables or TrieTables.build(fmt.codec.item_tokens)
    beams = max(n, 2)  # as the reference: the same beam width, so the same search
    prompts = prompt_ids(fmt, histories, max_items)
    by_len: dict[int, list[int]] = defaultdict(list)
    for user, p in enumerate(prompts):
        by_len[len(p)].append(user)
    out: list[Candidates | None] = [None] * len(prompts)
    device = next(model.parameters()).device
    model.eval()
    bar = tqdm(total=len(prompts), unit="user", desc="beam search", disable=not progress)
    before = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)  # SDPA, except for the beams' steps (beam_attention)
    try:
        _batches(model, by_len, prompts, tables, beams, batch_size, n, out, bar, device)
    finally:
        model.set_attn_implementation(before)
    bar.close()
    return out  # type: ignore[return-value]


def _batches(model, by_len, prompts, tables, beams, batch_size, n, out, bar, device) -> None:
    with torch.no_grad():
        for users_same_len in by_len.values():
            for lo in range(0, len(users_same_len), batch_size):
                users = users_same_len[lo : lo + batch_size]
                ids = torch.tensor([prompts[u] for u in users], device=device)  # (b, t)
                items, scores = _search(model, ids, tables, beams)  # (b, B), (b, B)
                for row, user in enumerate(users):
                    out[user] = _collect(items[row], scores[row], n)
                bar.update(len(users))


def _search(model, ids, tables: TrieTables, beams: int):
    """Beam search for ``ids`` (b, t), prompts of one length: item ids (b, B) and summed log-probs (b, B), -inf where
    fewer than B items are reachable."""

    b = ids.shape[0]
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # the vocabulary projection of the last token only
    cache = out.past_key_values
    logits = out.logits[:, -1, :]  # (b, V) after the whole prompt
    score = torch.zeros(b, 1, device=ids.device)  # (b, k) one live beam per user at the root
    state = torch.zeros(b, 1, dtype=torch.long, device=ids.device)  # (b, k) prefix states
    width = len(tables.tokens)
    for d in range(width):
        k = state.shape[1]
        logp = torch.log_softmax(logits.float(), dim=-1).view(b, k, -1)  # (b, k, V) before the mask
        tok = tables.tokens[d].to(ids.device)[state]  # (b, k, F)
        nxt = tables.nxt[d].to(ids.device)[state]  # (b, k, F)
        cand = score.unsqueeze(-1) + logp.gather(-1, tok.clamp(min=0))  # (b, k, F)
        cand = cand.masked_fill(tok < 0, float("-inf"))
        keep = min(beams, cand.shape[1] * cand.shape[2])
        score, flat = cand.view(b, -1).topk(keep, dim=-1)  # (b, keep) best first
        fan = tok.shape[-1]
        parent = flat // fan  # (b, keep) which beam each survivor extends
        chosen = tok.view(b, -1).gather(1, flat)  # (b, keep)
        state = nxt.view(b, -1).gather(1, flat)  # (b, keep)
        if d == width - 1:
            break
        rows = (torch.arange(b, device=ids.device).unsqueeze(1) * k + parent).reshape(-1)  # (b*keep,) into (b*k)
        if d == 0:
            cache = shared_prompt_cache(cache, keep)  # the prompt's keys and values once per user, not per beam
        else:
            cache.reorder_cache(rows)  # only the beams' own few tokens move
        # a beam past the reachable codes (score -inf) feeds a real token; it stays -inf and is dropped at the end
        step = model(input_ids=chosen.clamp(min=0).reshape(-1, 1), past_key_values=cache, use_cache=True)
        cache = step.past_key_values
        logits = step.logits[:, -1, :]  # (b*keep, V)
    items = tables.items.to(ids.device)[state]  # (b, keep)
    if score.shape[1] < beams:  # fewer reachable codes than beams
        pad = beams - score.shape[1]
        score = torch.cat([score, score.new_full((b, pad), float("-inf"))], dim=1)
        items = torch.cat([items, items.new_zeros((b, pad))], dim=1)
    return items.cpu().numpy(), score.double().cpu().numpy()


def _collect(items: np.ndarray, scores: np.ndarray, n: int) -> Candidates:
    """Up to ``n`` reachable items (finite score), best first; item ids are unique by construction."""
    ok = np.isfinite(scores)
    items, scores = items[ok][:n], scores[ok][:n]
    return Candidates(items=items.astype(np.int64), scores=scores.astype(np.float64))


def shared_prompt_cache(prompt_cache, beams: int):
    """A transformers cache for ``beams`` beams per user that keeps the prompt's keys and values (b, h, t, d) once per
    user and each beam's decoded tokens (b*beams, h, s, d) apart. Attention still reads (b*beams, h, t+s, d), written
    in one copy per layer and step; nothing repeats or reorders the prompt part (with a plain cache, repeating the
    prompt per beam, reordering it and growing it by concatenation were most of the search's time)."""
    return Cache(layers=[SharedPromptLayer(layer.keys, layer.values, beams) for layer in prompt_cache.layers])


class SharedPromptLayer(DynamicLayer):
    """One layer of :func:`shared_prompt_cache`."""

    def __init__(self, keys, values, beams: int) -> None:
        super().__init__()
        self.prompt = (keys, values)  # (b, h, t, d) each
        self.beams = beams
        self.suffix = None  # (keys, values) (b*beams, h, s, d) each
        self.is_initialized = True
        self.device, self.keys, self.values = keys.device, keys, values  # what generic cache code may inspect

    def get_seq_length(self) -> int:
        return self.prompt[0].shape[-2] + (0 if self.suffix is None else self.suffix[0].shape[-2])

    def reorder_cache(self, beam_idx) -> None:
        self.beams = len(beam_idx) // self.prompt[0].shape[0]
        if self.suffix is not None:
            self.suffix = tuple(x.index_select(0, beam_idx) for x in self.suffix)

    def update(self, key_states, value_states, *args, **kwargs):
        new = (key_states, value_states)
        self.suffix = new if self.suffix is None else tuple(torch.cat(p, dim=-2) for p in zip(self.suffix, new))
        keys, values = self.suffix  # (b*beams, h, s, d); beam_attention reads the prompt from the tag
        keys = keys.view_as(keys)  # a fresh tensor object to carry the tag
        keys.tandem_prompt = (*self.prompt, self.beams)
        return keys, values


ATTENTION = "tandem_beam"


def beam_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs):
    """Attention for one new token per beam over the user's prompt, read once per user, and the beam's own decoded
    tokens; any other call goes to PyTorch's SDPA as usual. ``query`` (b*B, h, 1, d); ``key``/``value`` the beams'
    tokens (b*B, h_kv, s, d), tagged by :class:`SharedPromptLayer` with the prompt's (b, h_kv, t, d)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    tag = getattr(key, "tandem_prompt", None)
    if tag is None or query.shape[-2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    pk, pv, beams = tag
    b, h_kv, t, d = pk.shape
    h, s = query.shape[1], key.shape[-2]
    g = h // h_kv  # query heads per key head (grouped-query attention)
    scale = scaling if scaling is not None else d**-0.5
    q = query.view(b, beams, h_kv, g, d)  # head j reads key head j // g
    qp = q.permute(0, 2, 3, 1, 4).reshape(b, h_kv, g * beams, d)  # (b, h_kv, g*B, d)
    sk, sv = key.view(b, beams, h_kv, s, d), value.view(b, beams, h_kv, s, d)
    scores_p = (qp @ pk.transpose(-1, -2)).float() * scale  # (b, h_kv, g*B, t)
    scores_s = torch.einsum("bnkgd,bnksd->bkgns", q, sk).reshape(b, h_kv, g * beams, s).float() * scale
    w = torch.softmax(torch.cat([scores_p, scores_s], dim=-1), dim=-1).to(query.dtype)  # (b, h_kv, g*B, t+s)
    out = w[..., :t] @ pv  # (b, h_kv, g*B, d)
    ws = w[..., t:].reshape(b, h_kv, g, beams, s)
    out = out.view(b, h_kv, g, beams, d) + torch.einsum("bkgns,bnksd->bkgnd", ws, sv)
    return out.permute(0, 3, 1, 2, 4).reshape(b * beams, 1, h, d), None  # (b*B, 1, h, d)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, beam_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


_register()
