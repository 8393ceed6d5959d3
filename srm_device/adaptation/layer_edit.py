"""Generated low-rank edits of several SASRec layers, applied on the device without backprop (DUET, WWW 2023,
arXiv 2302.04397: the cloud generates the weights of the device model's layers from the device's recent behaviour).

``duet`` is the device method (:mod:`srm_device.adaptation.base`): its payload is the flat edits (n, n_params) in
:meth:`LayerEditSpec.split`'s order, one row per history. The edited layers are the last transformer block's
attention output projection and its second feed-forward layer, plus the head that acts on the user state
(:mod:`srm_device.head`). Each linear layer ``y = x Wᵀ + b`` becomes

    y = x Wᵀ + b + (x B) Aᵀ          A: (out, r), B: (in, r), one pair per user

and the head is ``u' = u + (u B) Aᵀ + bias``. With all-zero parameters the model is the static SRM (up to float32
rounding of the re-implemented last block, which `tests/test_layer_edit.py` bounds at 1e-5). Parameters of the wrong
shape or with non-finite values are refused, so a device keeps its last good ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srm_device.adaptation.base import DeviceMethod, register
from srm_device.head import HeadShapeError, apply_head
from srm_device.models import SequentialRecommender
from srm_device.persona import FLOAT32
from srm_device.scoring import pad_histories

# name -> (input width, output width) as functions of (hidden d, feed-forward width)
EDIT_LAYERS = {
    "attn_out": lambda d, inner: (d, d),
    "ffn_out": lambda d, inner: (inner, d),
}


@dataclass(frozen=True)
class LayerEditSpec:
    """What the generator must produce for one SASRec: widths, rank, and the edited layers."""

    hidden_size: int
    inner_size: int
    rank: int
    layers: tuple[str, ...] = ("attn_out", "ffn_out")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        d, r = self.hidden_size, self.rank
        out: dict[str, tuple[int, ...]] = {}
        for name in self.layers:
            n_in, n_out = EDIT_LAYERS[name](d, self.inner_size)
            out[f"{name}.a"] = (n_out, r)
            out[f"{name}.b"] = (n_in, r)
        out.update({"head.a": (d, r), "head.b": (d, r), "head.bias": (d,)})
        return out

    @property
    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())

    def full_layer_params(self) -> int:
        """Parameters of the edited layers sent whole (weights and biases), for byte comparisons."""
        d = self.hidden_size
        total = d * d + d  # the head as a full (d, d) matrix and bias
        for name in self.layers:
            n_in, n_out = EDIT_LAYERS[name](d, self.inner_size)
            total += n_in * n_out + n_out
        return total

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(n, n_params) -> named tensors (n, *shape)."""
        if flat.dim() != 2 or flat.size(1) != self.n_params:
            raise HeadShapeError(f"generated layer edits have shape {tuple(flat.shape)}, this SRM needs "
                                 f"(n, {self.n_params})")
        out, at = {}, 0
        for name, shape in self.shapes().items():
            size = math.prod(shape)
            out[name] = flat[:, at : at + size].reshape(flat.size(0), *shape)
            at += size
        return out

    def check(self, flat: torch.Tensor) -> torch.Tensor:
        """``flat`` (n, n_params) if it fits and is finite; HeadShapeError otherwise."""
        self.split(flat)
        if not torch.isfinite(flat).all():
            raise HeadShapeError("generated layer edits have non-finite values")
        return flat


def _lowrank(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(x B) Aᵀ per row: x (n, t, in), a (n, out, r), b (n, in, r) -> (n, t, out)."""
    return torch.einsum("ntr,nor->nto", torch.einsum("nti,nir->ntr", x, b), a)


def _edited_last_block(layer: nn.TransformerEncoderLayer, x: torch.Tensor,
                       edits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The post-LN encoder layer of :class:`srm_device.models.sasrec.SASRec`, in eval mode, with low-rank edits of
    its attention output projection and second feed-forward layer. x (n, t, d) -> (n, t, d)."""
    attn = layer.self_attn
    n, t, d = x.shape
    h = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # 3 × (n, t, d)
    q, k, v = (z.reshape(n, t, h, d // h).transpose(1, 2) for z in (q, k, v))  # (n, h, t, d/h)
    ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, d)  # (n, t, d)
    att = attn.out_proj(ctx)  # (n, t, d)
    if "attn_out.a" in edits:
        att = att + _lowrank(ctx, edits["attn_out.a"], edits["attn_out.b"])
    x = layer.norm1(x + att)  # (n, t, d)
    hid = layer.activation(layer.linear1(x))  # (n, t, inner)
    ffn = layer.linear2(hid)  # (n, t, d)
    if "ffn_out.a" in edits:
        ffn = ffn + _lowrank(hid, edits["ffn_out.a"], edits["ffn_out.b"])
    return layer.norm2(x + ffn)  # (n, t, d)


def last_block_input(srm: SequentialRecommender, item_seq: torch.Tensor) -> torch.Tensor:
    """SASRec's hidden states entering its last block, in eval mode: (n, t) -> (n, t, d)."""
    if not hasattr(srm, "encoder"):
        raise ValueError(f"multi-layer edits need a transformer SRM (sasrec), not {srm.name}")
    t = item_seq.size(1)
    x = srm.item_emb(item_seq) + srm.pos_emb(torch.arange(t, device=item_seq.device))[None]  # (n, t, d)
    x = srm.emb_norm(x)
    causal = nn.Transformer.generate_square_subsequent_mask(t, device=item_seq.device)  # (t, t)
    for layer in srm.encoder.layers[:-1]:
        x = layer(x, src_mask=causal, is_causal=True)
    return x


def edited_user_states(srm: SequentialRecommender, item_seq: torch.Tensor, lengths: torch.Tensor,
                       edits: dict[str, torch.Tensor], block_input: torch.Tensor | None = None) -> torch.Tensor:
    """User states (n, d) under per-row layer edits (see :meth:`LayerEditSpec.split`); ``block_input`` reuses
    precomputed :func:`last_block_input` (the cloud's training does, as the first layers are frozen)."""
    x = last_block_input(srm, item_seq) if block_input is None else block_input  # (n, t, d)
    x = _edited_last_block(srm.encoder.layers[-1], x, edits)  # (n, t, d)
    user = x[torch.arange(x.size(0)), lengths - 1]  # (n, d)
    return apply_head(user, edits["head.a"], edits["head.b"], edits["head.bias"])  # (n, d)


@register
class LayerEdit(DeviceMethod):
    name = "duet"

    def __init__(self, srm: SequentialRecommender, rank: int = 8,
                 layers: tuple[str, ...] = ("attn_out", "ffn_out")) -> None:
        super().__init__(srm)
        if not hasattr(srm, "encoder"):
            raise ValueError(f"multi-layer edits need a transformer SRM (sasrec), not {srm.name}")
        self.spec = LayerEditSpec(srm.config.hidden_size, srm.config.inner_size, rank, tuple(layers))

    def check(self, payload: torch.Tensor) -> torch.Tensor:
        return self.spec.check(torch.as_tensor(payload, dtype=torch.float32))

    @torch.no_grad()
    def user_states(self, histories, payload: torch.Tensor) -> torch.Tensor:
        edits = self.spec.split(self.check(payload))
        seq, lengths = pad_histories(histories, self.srm.config.max_len)  # (n, t), (n,)
        return edited_user_states(self.srm, seq, lengths, edits)  # (n, d)

    def payload_bytes(self) -> int:
        return FLOAT32 * self.spec.n_params
