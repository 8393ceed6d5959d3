import math

import numpy as np
import pytest
import torch

from eval.evaluate import rank_targets
from eval.metrics import metrics_from_ranks, target_ranks
from tandem.data.split import EvalCase, leave_one_out


def test_leave_one_out():
    seqs = [np.array([5, 6, 7, 8, 9]), np.array([1, 2]), np.array([3, 4, 5])]
    with pytest.warns(UserWarning, match="1 users"):
        split = leave_one_out(seqs)
    assert split.test.users.tolist() == [0, 2]
    assert split.test.targets.tolist() == [9, 5] and split.valid.targets.tolist() == [8, 4]
    assert [h.tolist() for h in split.test.histories] == [[5, 6, 7, 8], [3, 4]]
    assert [h.tolist() for h in split.valid.histories] == [[5, 6, 7], [3]]
    assert [t.tolist() for t in split.train] == [[5, 6, 7], [3]]
    assert split.n_train_examples == 2  # (5->6), (6->7); the 1-item train sequence gives none


def test_metrics_hand_computed():
    ranks = np.array([0, 1, 4, 9, 30])
    m = metrics_from_ranks(ranks, ks=(5, 10))
    assert m["hr@5"] == pytest.approx(3 / 5)
    assert m["hr@10"] == pytest.approx(4 / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10) / 5)


def test_target_rank_counts_strictly_greater_and_rejects_nan():
    scores = torch.tensor([[-torch.inf, 0.9, 0.5, 0.7, 0.5]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    assert target_ranks(scores, torch.tensor([1])).tolist() == [0]
    bad = scores.clone()
    bad[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(bad, torch.tensor([2]))


def test_history_masking_never_masks_target():
    # item 3 scores highest, item 2 second; history holds 3 and 2; target is 2
    def score_fn(seq, lengths):
        return torch.tensor([[0.0, 0.1, 0.8, 0.9, 0.2]]).repeat(len(seq), 1)

    case = EvalCase(np.array([0]), [np.array([3, 2])], np.array([2]))
    assert rank_targets(score_fn, case, max_len=5).tolist() == [1]
    assert rank_targets(score_fn, case, max_len=5, mask_history=True).tolist() == [0]
