"""Candidate scores of the device SRM with a generated head: the one code path for torch and the ONNX graph.

``rerank_scores`` is what :class:`srm_device.onnx_export.RerankGraph` traces, so the exported graph and the torch
reference compute the same thing. ``torch_scores`` is the per-user convenience with the ONNX runtime's signature
(:meth:`srm_device.onnx_runtime.OnnxReranker.scores`): numpy history and candidates in, numpy scores out.
"""

from __future__ import annotations

import numpy as np
import torch

from srm_device.head import HeadParams, HeadSpec, apply_head
from srm_device.models import SequentialRecommender


def rerank_scores(model: SequentialRecommender, item_seq: torch.Tensor, lengths: torch.Tensor,
                  candidates: torch.Tensor, head: HeadParams | None) -> torch.Tensor:
    """Scores of ``candidates`` under the SRM with ``head`` applied: (b, t), (b,), (b, c) -> (b, c).

    ``head=None`` is the static SRM (same as ``model.score_candidates``).
    """
    user = model.sequence_output(item_seq, lengths)  # (b, d)
    if head is not None:
        user = apply_head(user, head.a, head.b, head.bias)  # (b, d)
    cand = model.item_embeddings()[candidates]  # (b, c, d)
    return torch.einsum("bd,bcd->bc", user, cand)  # (b, c)


def clip_history(history: np.ndarray, max_len: int) -> np.ndarray:
    """The last ``max_len`` items of one user's history (item ids, oldest first) as int64 (t,)."""
    hist = np.ascontiguousarray(np.asarray(history, dtype=np.int64).reshape(-1)[-max_len:])  # (t,)
    if hist.size == 0:
        raise ValueError("history is empty; the SRM needs at least one item")
    return hist


@torch.no_grad()
def torch_scores(model: SequentialRecommender, history: np.ndarray, candidates: np.ndarray,
                 head: HeadParams | None) -> np.ndarray:
    """Scores (c,) of ``candidates`` for one user's ``history`` (item ids, oldest first; the last max_len are used)."""
    hist = clip_history(history, model.config.max_len)  # (t,)
    item_seq, lengths = torch.from_numpy(hist)[None], torch.tensor([hist.size])  # (1, t), (1,)
    cand = torch.from_numpy(np.asarray(candidates, dtype=np.int64).reshape(1, -1).copy())  # (1, c)
    if head is not None:
        head = head.check(HeadSpec(model.config.hidden_size, head.a.shape[1]))
    return rerank_scores(model, item_seq, lengths, cand, head)[0].numpy()  # (c,)
