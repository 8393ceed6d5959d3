"""The one scoring path of the device SRM, batched: histories -> user vectors (through generated head parameters) ->
candidate, catalogue and policy scores.

Everything that scores with the SRM calls this module: the device session, the cloud's ``POST /v1/recommend`` (which
runs the device steps on the server for thin clients), the exported ONNX graph (:func:`rerank_scores` is what it
traces), threshold calibration, collaborative training and every evaluation. So the server cannot drift from what its
thresholds were fitted on.

LSC4Rec (Lv et al. 2025, arXiv 2502.08667): the SRM turns the freshest history into a user vector, scores the cached
LLM candidates, and the request policy compares the SRM's order of those candidates with the LLM's. DUET (arXiv
2302.04397): the user vector passes through the head parameters the cloud generated before scoring.

An empty history reads the padding item alone (length 1), so a cold user still gets a (weak) vector; no path raises
on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from srm_device.fusion import FusionInputs, FusionParams, fuse
from srm_device.head import HeadParams, HeadSpec, apply_head
from srm_device.models import SequentialRecommender
from srm_device.policies import PolicyInputs

BATCH = 512


# --- histories -----------------------------------------------------------------------------------------------------
def clip_history(history, max_len: int) -> np.ndarray:
    """The last ``max_len`` items of one history (item ids, oldest first) as int64 (t,); ``[0]`` when empty."""
    hist = np.asarray(history, dtype=np.int64).reshape(-1)[-max_len:]  # (t,)
    return np.ascontiguousarray(hist) if hist.size else np.zeros(1, dtype=np.int64)


def pad_histories(histories: Sequence, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``max_len`` items of each history, right-padded with 0: (b, t) ids and (b,) lengths."""
    clipped = [clip_history(h, max_len) for h in histories]
    lengths = torch.tensor([len(h) for h in clipped], dtype=torch.long)  # (b,)
    seq = torch.zeros(len(clipped), int(lengths.max()) if len(clipped) else 1, dtype=torch.long)  # (b, t)
    for row, h in enumerate(clipped):
        seq[row, : len(h)] = torch.from_numpy(h)
    return seq, lengths


def recent_window(history, k: int) -> list[int]:
    """The last ``k`` items of a history, left-padded with 0 to length k (what the parameter generator reads)."""
    tail = [int(i) for i in history[-k:]]
    return [0] * (k - len(tail)) + tail


# --- tensors (traced by the ONNX export) ---------------------------------------------------------------------------
def user_states(model: SequentialRecommender, item_seq: torch.Tensor, lengths: torch.Tensor,
                head: HeadParams | None = None) -> torch.Tensor:
    """(b, t), (b,) -> (b, d): the SRM's state at each last item, through ``head`` (shared (d, r) or per-row
    (b, d, r) parameters; None is the static SRM)."""
    user = model.sequence_output(item_seq, lengths)  # (b, d)
    if head is None:
        return user
    return apply_head(user, head.a, head.b, head.bias)  # (b, d)


def rerank_scores(model: SequentialRecommender, item_seq: torch.Tensor, lengths: torch.Tensor,
                  candidates: torch.Tensor, head: HeadParams | None = None) -> torch.Tensor:
    """Scores of ``candidates`` under the SRM with ``head`` applied: (b, t), (b,), (b, c) -> (b, c)."""
    user = user_states(model, item_seq, lengths, head)  # (b, d)
    return torch.einsum("bd,bcd->bc", user, model.item_embeddings()[candidates])  # (b, c)


# --- numpy in, numpy out -------------------------------------------------------------------------------------------
def _rows(head: HeadParams | None, start: int, stop: int) -> HeadParams | None:
    if head is None or head.a.dim() == 2:
        return head
    return HeadParams(head.a[start:stop], head.b[start:stop], head.bias[start:stop])


@torch.no_grad()
def user_vectors(model: SequentialRecommender, histories: Sequence, head: HeadParams | None = None,
                 batch: int = BATCH) -> torch.Tensor:
    """(u, d) user vectors of ``histories``; ``head`` is shared ((d, r) parameters) or per user ((u, d, r))."""
    out = []
    for start in range(0, len(histories), batch):
        seq, lengths = pad_histories(histories[start : start + batch], model.config.max_len)  # (b, t), (b,)
        out.append(user_states(model, seq, lengths, _rows(head, start, start + batch)))  # (b, d)
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)


def user_vector(model: SequentialRecommender, history, head: HeadParams | None = None) -> torch.Tensor:
    """(1, d): one user's vector (see :func:`user_vectors`)."""
    return user_vectors(model, [history], head)


@torch.no_grad()
def candidate_logits(model: SequentialRecommender, user: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """SRM logits u·e_i of candidate ids: user (u, d), ids (u, c) -> (u, c); one user (1, d) with ids (c,) -> (c,)."""
    ids = np.asarray(ids, dtype=np.int64)
    cand = model.item_embeddings()[torch.from_numpy(ids.reshape(len(user), -1))]  # (u, c, d)
    return torch.einsum("ud,ucd->uc", user, cand).numpy().reshape(ids.shape)


@torch.no_grad()
def catalogue_logits(model: SequentialRecommender, user: torch.Tensor) -> np.ndarray:
    """(u, d) -> (u, n_items) SRM logits of every real item (column i holds item i + 1)."""
    return (user @ model.item_embeddings()[1:].T).numpy()  # (u, n)


def score_history(model: SequentialRecommender, history, candidates, head: HeadParams | None) -> np.ndarray:
    """Scores (c,) of ``candidates`` for one history, with the ONNX runtime's signature (the torch reference of
    :meth:`srm_device.onnx_runtime.OnnxReranker.scores`)."""
    if head is not None:
        head = head.check(HeadSpec(model.config.hidden_size, head.a.shape[1]))
    return candidate_logits(model, user_vector(model, history, head), np.asarray(candidates).reshape(-1))


def llm_mass(scores: np.ndarray) -> np.ndarray:
    """The LLM's self-evaluation of its lists, ``(..., c) -> (...)``: Σ exp(sequence log-prob), clipped to [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    top = s.max(axis=-1, keepdims=True)
    return np.clip(np.exp(top[..., 0]) * np.exp(s - top).sum(axis=-1), 0.0, 1.0)


@torch.no_grad()
def policy_inputs(model: SequentialRecommender, user: torch.Tensor, histories: Sequence, cached_ids: np.ndarray,
                  recent_k: int, cached_scores: np.ndarray | None = None) -> PolicyInputs:
    """The request policies' view of u devices: user vectors (u, d) from the freshest ``histories`` (u lists), the
    cached candidate lists (u, c), best first, and their LLM log-probabilities (u, c), which give ``llm_mass``."""
    ids = torch.from_numpy(np.asarray(cached_ids, dtype=np.int64).reshape(len(user), -1))  # (u, c)
    emb = model.item_embeddings()  # (n+1, d)
    cand = emb[ids]  # (u, c, d)
    srm = torch.einsum("ud,ucd->uc", user, cand).numpy()  # (u, c)
    log_p = torch.log_softmax(user @ emb[1:].T, dim=1)  # (u, n_items) next-item distribution
    mass = torch.logsumexp(log_p.gather(1, ids - 1), dim=1).exp().numpy()  # (u,)
    recent = torch.tensor([recent_window(h, recent_k) for h in histories], dtype=torch.long)  # (u, k)
    u, c = ids.shape
    return PolicyInputs(srm, np.tile(np.arange(1, c + 1), (u, 1)), np.array([len(h) for h in histories]),
                        model.config.max_len, user.numpy(), emb[recent].numpy(), cand.numpy(), mass,
                        None if cached_scores is None else llm_mass(np.asarray(cached_scores).reshape(u, c)))


# --- fusion --------------------------------------------------------------------------------------------------------
def fuse_list(rule: str, params: FusionParams, llm_scores: np.ndarray, srm_logits: np.ndarray) -> np.ndarray:
    """(c,) fused scores of one candidate list, best-first order being the LLM's rank (LSC4Rec fusion rules)."""
    srm_logits = np.asarray(srm_logits, dtype=np.float64)
    x = FusionInputs(np.arange(1, len(srm_logits) + 1)[None], np.asarray(llm_scores, dtype=np.float64)[None],
                     srm_logits[None])
    return fuse(rule, x, params)[0]  # (c,)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties keep the input order."""
    return np.argsort(-np.asarray(scores), kind="stable")[:k]
