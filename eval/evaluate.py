"""Full-ranking evaluation of a sequential model on one split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from eval.metrics import metrics_from_ranks, target_ranks
from srm_device.scoring import pad_histories
from tandem.data.split import EvalCase

# (item_seq (b, t) right-padded with 0, lengths (b,)) -> scores (b, n_items + 1), column 0 = padding
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def rank_targets(score_fn: ScoreFn, case: EvalCase, max_len: int, mask_history: bool = False,
                 batch_size: int = 512) -> np.ndarray:
    """0-based rank of each user's target among all items.

    Padding (column 0) is never ranked. With ``mask_history`` the user's past items are excluded from the ranking,
    except the target itself, which is never masked.
    """
    ranks = []
    for start in range(0, len(case.targets), batch_size):
        hist = case.histories[start : start + batch_size]
        targets = torch.from_numpy(case.targets[start : start + batch_size])  # (b,)
        seq, lengths = pad_histories(hist, max_len)
        scores = score_fn(seq, lengths).float().clone()  # (b, n+1)
        rows = torch.arange(len(targets))
        target_scores = scores[rows, targets].clone()  # (b,)
        scores[:, 0] = -torch.inf
        if mask_history:
            for row, h in enumerate(hist):
                scores[row, torch.from_numpy(np.asarray(h, dtype=np.int64))] = -torch.inf
            scores[rows, targets] = target_scores  # the target is never masked
        ranks.append(target_ranks(scores, targets))
    return torch.cat(ranks).numpy()


def evaluate_case(score_fn: ScoreFn, case: EvalCase, max_len: int, mask_history: bool = False) -> dict[str, float]:
    return metrics_from_ranks(rank_targets(score_fn, case, max_len, mask_history))
