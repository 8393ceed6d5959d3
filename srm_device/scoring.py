"""The device's scoring steps for one user, shared by :class:`srm_device.session.DeviceSession` and the cloud's
``POST /v1/recommend`` (which runs the device steps on the server for thin clients).

LSC4Rec (Lv et al. 2025, arXiv 2502.08667): the SRM turns the freshest history into a user vector (through the head
parameters the cloud generated for it), scores the cached LLM candidates, and the request policy compares the SRM's
order of those candidates with the LLM's.
"""

from __future__ import annotations

import numpy as np
import torch

from srm_device.fusion import FusionInputs, FusionParams, fuse
from srm_device.head import HeadParams, apply_head
from srm_device.models import SequentialRecommender
from srm_device.policies import PolicyInputs


@torch.no_grad()
def user_vector(model: SequentialRecommender, history: list[int], head: HeadParams | None = None) -> torch.Tensor:
    """(1, d): the SRM's state at the last of the ``max_len`` newest items, with the generated head applied.

    An empty history reads the padding item alone, so a cold user still gets a (weak) vector.
    """
    hist = [int(i) for i in history[-model.config.max_len :]] or [0]
    seq = torch.tensor([hist], dtype=torch.long)  # (1, t)
    user = model.sequence_output(seq, torch.tensor([len(hist)]))  # (1, d)
    if head is None:
        return user
    return apply_head(user, head.a, head.b, head.bias)  # (1, d)


@torch.no_grad()
def candidate_logits(model: SequentialRecommender, user: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """(c,) SRM logits u·e_i of the candidate ids (c,) for one user vector (1, d)."""
    cand = model.item_embeddings()[torch.from_numpy(np.asarray(ids, dtype=np.int64))]  # (c, d)
    return (cand @ user[0]).numpy()  # (c,)


@torch.no_grad()
def catalogue_logits(model: SequentialRecommender, user: torch.Tensor) -> np.ndarray:
    """(n_items,) SRM logits of every real item (index i holds item i + 1)."""
    return (user @ model.item_embeddings()[1:].T)[0].numpy()  # (n,)


@torch.no_grad()
def llm_mass(scores: np.ndarray) -> np.ndarray:
    """The LLM's self-evaluation of its lists, ``(..., c) -> (...)``: Σ exp(sequence log-prob), clipped to [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    top = s.max(axis=-1, keepdims=True)
    return np.clip(np.exp(top[..., 0]) * np.exp(s - top).sum(axis=-1), 0.0, 1.0)


def policy_inputs(model: SequentialRecommender, user: torch.Tensor, history: list[int], cached_ids: np.ndarray,
                  recent_k: int, cached_scores: np.ndarray | None = None) -> PolicyInputs:
    """A one-user :class:`PolicyInputs` for a cached candidate list (c,), best first, and the fresh user (1, d);
    ``cached_scores`` (c,), the list's LLM log-probabilities, give ``llm_mass``."""
    cached_ids = np.asarray(cached_ids, dtype=np.int64)
    emb = model.item_embeddings().detach()  # (n+1, d)
    recent = [0] * max(0, recent_k - len(history)) + [int(i) for i in history[-recent_k:]]
    ids = torch.from_numpy(cached_ids)
    cand = emb[ids]  # (c, d)
    srm = (cand @ user[0]).numpy()  # (c,)
    log_p = torch.log_softmax(user[0] @ emb[1:].T, dim=0)  # (n_items,)
    mass = torch.logsumexp(log_p[ids - 1], dim=0).exp().numpy()[None]  # (1,)
    return PolicyInputs(srm[None], np.arange(1, len(srm) + 1)[None], np.array([len(history)]),
                        model.config.max_len, user.numpy(), emb[torch.tensor(recent)].numpy()[None],
                        cand.numpy()[None], mass,
                        None if cached_scores is None else llm_mass(np.asarray(cached_scores)[None]))


def fuse_list(rule: str, params: FusionParams, llm_scores: np.ndarray, srm_logits: np.ndarray) -> np.ndarray:
    """(c,) fused scores of one candidate list, best-first order being the LLM's rank (LSC4Rec fusion rules)."""
    srm_logits = np.asarray(srm_logits, dtype=np.float64)
    x = FusionInputs(np.arange(1, len(srm_logits) + 1)[None], np.asarray(llm_scores, dtype=np.float64)[None],
                     srm_logits[None])
    return fuse(rule, x, params)[0]  # (c,)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties keep the input order."""
    return np.argsort(-np.asarray(scores), kind="stable")[:k]
