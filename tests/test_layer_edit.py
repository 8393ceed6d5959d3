"""Multi-layer generated edits (DUET): zero edits are the static SRM, edits change the state, bad ones are refused."""

from __future__ import annotations

import pytest
import torch

from srm_device.adaptation.layer_edit import LayerEditSpec, edited_user_states
from srm_device.head import HeadShapeError
from srm_device.models import build_model, default_config
from srm_device.scoring import pad_histories


def _srm():
    torch.manual_seed(0)
    return build_model("sasrec", 50, default_config("sasrec", hidden_size=32, inner_size=64, max_len=12)).eval()


def test_zero_edits_are_the_static_srm_and_edits_move_it():
    srm = _srm()
    spec = LayerEditSpec(32, 64, rank=4)
    seq, lengths = pad_histories([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]], 12)
    with torch.no_grad():
        static = srm.sequence_output(seq, lengths)  # (3, d)
        zero = edited_user_states(srm, seq, lengths, spec.split(torch.zeros(3, spec.n_params)))
        assert torch.allclose(zero, static, atol=1e-5)
        assert torch.equal((zero @ srm.item_embeddings().T).topk(10).indices,
                           (static @ srm.item_embeddings().T).topk(10).indices)
        flat = torch.zeros(3, spec.n_params)
        shapes = spec.shapes()
        first = int(torch.tensor(shapes["attn_out.a"]).prod())
        gen = torch.Generator().manual_seed(1)
        flat[:, :first] = torch.randn(3, first, generator=gen)  # A of the attention edit; B = 0 keeps it inert
        assert torch.allclose(edited_user_states(srm, seq, lengths, spec.split(flat)), static, atol=1e-5)
        flat[:, first : 2 * first] = torch.randn(3, first, generator=gen)  # now B too: the attention output moves
        moved = edited_user_states(srm, seq, lengths, spec.split(flat))
        assert (moved - static).abs().max() > 1e-2


def test_bad_layer_edits_are_refused():
    spec = LayerEditSpec(32, 64, rank=4)
    assert spec.n_params == 2 * 32 * 4 + (64 + 32) * 4 + 2 * 32 * 4 + 32
    assert spec.full_layer_params() == (32 * 32 + 32) * 2 + 64 * 32 + 32
    with pytest.raises(HeadShapeError, match="shape"):
        spec.check(torch.zeros(2, spec.n_params - 1))
    bad = torch.zeros(2, spec.n_params)
    bad[1, 7] = float("nan")
    with pytest.raises(HeadShapeError, match="non-finite"):
        spec.check(bad)
    gru = build_model("gru4rec", 50, default_config("gru4rec", hidden_size=32, max_len=12)).eval()
    seq, lengths = pad_histories([[1, 2]], 12)
    with pytest.raises(ValueError, match="transformer"):
        edited_user_states(gru, seq, lengths, spec.split(torch.zeros(1, spec.n_params)))
