import numpy as np
import pytest
import torch

from srm_device.models import build_model, default_config, model_names
from srm_device.scoring import rerank_scores
from srm_device.training.windows import make_windows


@pytest.mark.parametrize("name", model_names())
def test_models_are_causal_and_scores_agree(name):
    torch.manual_seed(0)
    model = build_model(name, 30, default_config(name, max_len=8, hidden_size=16, inner_size=32)).eval()
    seq = torch.tensor([[3, 5, 7, 9, 0, 0], [1, 2, 3, 4, 5, 6]])  # (2, 6)
    changed = seq.clone()
    changed[1, 4:] = torch.tensor([11, 12])
    with torch.no_grad():
        h1, h2 = model(seq), model(changed)  # (2, 6, d)
        assert torch.allclose(h1[:, :4], h2[:, :4], atol=1e-6)  # the future does not leak backwards
        assert not torch.allclose(h1[1, 4:], h2[1, 4:])
        lengths = torch.tensor([4, 6])
        full = model.full_sort_scores(seq, lengths)  # (2, 31)
        cands = torch.tensor([[1, 7, 30], [2, 2, 9]])
        part = rerank_scores(model, seq, lengths, cands)  # (2, 3)
    assert full.shape == (2, 31) and torch.isinf(full[:, 0]).all()
    assert torch.allclose(part, full.gather(1, cands), atol=1e-5)
    assert not torch.isnan(full[:, 1:]).any()


def test_sasrec_rejects_too_long_input():
    model = build_model("sasrec", 10, default_config("sasrec", max_len=4, hidden_size=16))
    with pytest.raises(ValueError, match="exceeds max_len"):
        model(torch.ones(1, 5, dtype=torch.long))


@pytest.mark.parametrize("stride", [1, 3, 5])
def test_windows_train_every_pair_once(stride):
    max_len = 5
    lengths = (2, 5, 6, 17, 23)
    ids = np.arange(1, sum(lengths) + 1)  # every item appears once, so a target identifies its position
    seqs = np.split(ids, np.cumsum(lengths)[:-1])
    where = {int(item): (k, t) for k, s in enumerate(seqs) for t, item in enumerate(s)}
    x, y = make_windows(seqs, max_len=max_len, stride=stride)
    seen = []
    for row_x, row_y in zip(x, y):
        for j in np.flatnonzero(row_y):
            k, t = where[int(row_y[j])]  # target s[t] predicted from row_x[: j + 1]
            context = row_x[: j + 1]
            assert context.tolist() == seqs[k][t - len(context): t].tolist()  # a true suffix of the prefix
            assert len(context) >= min(t, max_len - stride + 1)
            seen.append(int(row_y[j]))
    expected = [int(s[t]) for s in seqs for t in range(1, len(s))]
    assert sorted(seen) == sorted(expected)  # each (prefix -> next) pair exactly once
    if stride == 1:  # RecBole's rows: each target sees min(t, max_len) items
        assert x.shape[0] == sum(max(1, len(s) - max_len) for s in seqs)


def test_cli_model_choices_are_the_registry():
    """`tandem train srm --model` lists its choices without importing torch; they must be the registry's names."""
    from pipelines.cli.train_cmd import MODEL_CHOICES

    assert sorted(MODEL_CHOICES) == model_names()


def test_sasrec_ffn_dropout_only_changes_training():
    """``ffn_dropout=0`` removes the dropout between the feed-forward layers (RecBole's layer has none): the same
    weights, the same eval output, a different training-mode output."""
    torch.manual_seed(0)
    base = build_model("sasrec", 30, default_config("sasrec", max_len=8, hidden_size=16, inner_size=32))
    lean = build_model("sasrec", 30, default_config("sasrec", max_len=8, hidden_size=16, inner_size=32,
                                                    ffn_dropout=0.0))
    lean.load_state_dict(base.state_dict())  # no parameter differs
    assert lean.encoder.layers[0].dropout.p == 0.0 and base.encoder.layers[0].dropout.p == 0.5
    seq = torch.tensor([[3, 5, 7, 9, 0, 0]])
    with torch.no_grad():
        assert torch.equal(base.eval()(seq), lean.eval()(seq))
        torch.manual_seed(1)
        a = base.train()(seq)
        torch.manual_seed(1)
        b = lean.train()(seq)
    assert not torch.allclose(a, b)
