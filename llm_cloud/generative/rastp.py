"""RASTP: representation-aware semantic token pruning while training (Zhan, Fu, Lv, Zhang, arXiv 2511.16943).

From decoder layer ``l`` on, only the top ``keep`` fraction of the input tokens are processed; a token's importance is
the cumulative attention it has received in layers ``< l`` (summed over heads and real query positions) times the L2
norm of its hidden state entering layer ``l``. Pruning applies in training mode only; inference runs the full model,
and the saved model is a plain Hugging Face model (nothing of this module is stored in it).

Our adaptation to a decoder-only LM with the loss at every position (the paper prunes an encoder's input): pruned
tokens cannot vanish, because their positions still carry labels. So

* a pruned token bypasses layers ``>= l``: its hidden state entering layer ``l`` is carried unchanged to the final
  norm and the LM head, and its loss still counts (the gradient reaches layers ``< l`` through it);
* in layers ``>= l`` the kept tokens attend only to kept tokens, in their original causal order, with their original
  rotary positions, and padding keys stay masked;
* each row keeps ``k = ceil(keep * t)`` tokens (``t`` the padded length); padding is scored lowest, so it is pruned
  first (a row with fewer than ``k`` real tokens keeps some padding, which is masked as a key anyway).

The attention probabilities of layers ``< l`` are recomputed under ``no_grad`` from the normed layer input, as
``softmax(q k^T / sqrt(d) + mask)`` with the same projections, rotary embedding and grouped-query expansion as
``eager_attention_forward`` in ``transformers/models/qwen2/modeling_qwen2.py`` (transformers 5.23); the layers
themselves keep their configured (e.g. SDPA) attention. The patched loop mirrors ``Qwen2Model.forward`` of that file,
and the masks come from ``transformers.masking_utils.create_causal_mask`` with an explicit 2D mask (so the
packed-sequence detection from ``position_ids`` never triggers). TRL's ``DataCollatorForLanguageModeling``
(``trl/trainer/sft_trainer.py``) pads on the right and passes ``attention_mask`` without ``position_ids`` when
``padding_free`` is off, as in :mod:`llm_cloud.train.sft`; left padding and explicit ``position_ids`` work as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

SUPPORTED = ("qwen2", "llama")


def importance(attn_received: torch.Tensor, hidden: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """(b,t) RASTP scores: attention received times the hidden-state L2 norm; padding (pad_mask 0) gets -inf."""
    scores = attn_received.float() * hidden.float().norm(dim=-1)  # (b,t)
    if pad_mask is not None:
        scores = scores.masked_fill(~pad_mask.bool(), float("-inf"))  # (b,t)
    return scores


def select_tokens(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(b,k) indices of the ``k`` highest scores of each row, in increasing (causal) order."""
    top = torch.topk(scores, k, dim=-1).indices  # (b,k)
    return torch.sort(top, dim=-1).values  # (b,k)


def attention_received(attn: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       pad_mask: torch.Tensor) -> torch.Tensor:
    """(b,t) attention probability each key receives in one layer, summed over heads and real queries (no grad).

    ``x`` (b,t,d) is the normed input of ``attn`` (the layer's ``input_layernorm`` output), ``cos``/``sin``
    (b|1,t,hd) its rotary embedding and ``pad_mask`` (b,t) bool. Follows ``Qwen2Attention.forward`` and
    ``eager_attention_forward``; each query may always see itself, so a left-padded row has no all-masked query.
    """
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb, repeat_kv

    b, t, _ = x.shape
    with torch.no_grad():
        q = attn.q_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)  # (b,h,t,hd)
        k = attn.k_proj(x).view(b, t, -1, attn.head_dim).transpose(1, 2)  # (b,kvh,t,hd)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (b,h,t,hd), (b,kvh,t,hd)
        k = repeat_kv(k, attn.num_key_value_groups)  # (b,h,t,hd)
        logits = torch.matmul(q, k.transpose(2, 3)).float() * attn.scaling  # (b,h,t,t)
        eye = torch.eye(t, dtype=torch.bool, device=x.device)  # (t,t)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # (t,t)
        allowed = causal & pad_mask[:, None, None, :] | eye  # (b,1,t,t)
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # (b,h,t,t)
        probs = probs * pad_mask[:, None, :, None]  # (b,h,t,t) real queries only
        return probs.sum(dim=(1, 2))  # (b,t)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (b|1,t,*) rows at idx (b,k) -> (b,k,*)."""
    x = x.expand(idx.shape[0], *x.shape[1:])  # (b,t,*)
    return torch.gather(x, 1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))  # (b,k,*)


Chooser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rastp_chooser(keep: float) -> Chooser:
    """RASTP's choice: ``(received (b,t), hidden (b,t,d), pad (b,t)) -> (b,k)`` the ``ceil(keep * t)`` tokens of
    highest :func:`importance`, in causal order."""
    def choose(received: torch.Tensor, hidden: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return select_tokens(importance(received, hidden, pad), math.ceil(keep * hidden.shape[1]))  # (b,k)

    return choose


def pruned_forward(inner: nn.Module, layer: int, choose: Chooser, original: Any,
                   active: Callable[[], bool] = lambda: True) -> Any:
    """A replacement for ``inner.forward`` (a ``Qwen2Model``/``LlamaModel``) that, in training mode and while
    ``active()``, runs layers ``>= layer`` on the tokens ``choose`` picks from the attention they received in layers
    ``< layer`` and their hidden states entering ``layer``."""
    from transformers.masking_utils import create_causal_mask
    from transformers.modeling_outputs import BaseModelOutputWithPast

    def forward(input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, past_key_values: Any = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                **kwargs: Any) -> BaseModelOutputWithPast:
        n_layers = inner.config.num_hidden_layers
        if (not inner.training or not active() or past_key_values is not None or layer >= n_layers
                or (attention_mask is not None and attention_mask.dim() != 2)):
            return original(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                            **kwargs)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        h = inner.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (b,t,d)
        b, t, _ = h.shape
        pad = (torch.ones(b, t, dtype=torch.bool, device=h.device) if attention_mask is None
               else attention_mask.to(h.device).bool())  # (b,t)
        if position_ids is None:
            position_ids = torch.arange(t, device=h.device).unsqueeze(0)  # (1,t)
        position_ids = position_ids.expand(b, t)  # (b,t)
        mask = create_causal_mask(config=inner.config, inputs_embeds=h, attention_mask=pad, past_key_values=None,
                                  position_ids=position_ids)  # (b,1,t,t) or None (sdpa is_causal)
        cos, sin = inner.rotary_emb(h, position_ids)  # (b,t,hd) each
        received = torch.zeros(b, t, device=h.device)  # (b,t)
        for i in range(layer):
            dec = inner.layers[i]
            received = received + attention_received(dec.self_attn, dec.input_layernorm(h).detach(), cos, sin,
                                                     pad)  # (b,t)
            h = dec(h, attention_mask=mask, position_embeddings=(cos, sin), position_ids=position_ids,
                    **kwargs)  # (b,t,d)
        idx = choose(received, h.detach(), pad)  # (b,k) increasing
        hk = _gather(h, idx)  # (b,k,d)
        pos_k = torch.gather(position_ids, 1, idx)  # (b,k)
        pad_k = torch.gather(pad, 1, idx)  # (b,k)
        mask_k = create_causal_mask(config=inner.config, inputs_embeds=hk, attention_mask=pad_k,
                                    past_key_values=None, position_ids=pos_k)  # (b,1,k,k) or None
        emb_k = (_gather(cos, idx), _gather(sin, idx))  # (b,k,hd) each
        for dec in inner.layers[layer:n_layers]:
            hk = dec(hk, attention_mask=mask_k, position_embeddings=emb_k, position_ids=pos_k, **kwargs)  # (b,k,d)
        h = h.scatter(1, idx[..., None].expand(-1, -1, h.shape[-1]), hk)  # (b,t,d) pruned rows bypass
        return BaseModelOutputWithPast(last_hidden_state=inner.norm(h))  # (b,t,d)

    return forward


def _inner_model(model: nn.Module) -> nn.Module:
    """The decoder stack (``model.model``) of a supported causal LM; ValueError naming the fix otherwise."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", type(model).__name__)
    inner = getattr(model, "model", None)
    if model_type not in SUPPORTED or inner is None or not hasattr(inner, "layers"):
        raise ValueError(f"RASTP pruning supports {', '.join(SUPPORTED)} causal LMs (the tiny profile), not "
                         f"model type {model_type!r}; remove `rastp:` from the config or use profile: tiny")
    if getattr(inner, "has_sliding_layers", False):
        raise ValueError(f"RASTP pruning needs full attention in every layer, but this {model_type} model has sliding-"
                         f"window layers; set use_sliding_window false or remove `rastp:` from the config")
    return inner


@contextmanager
def token_pruning(model: nn.Module, layer: int, choose: Chooser,
                  active: Callable[[], bool] = lambda: True) -> Iterator[nn.Module]:
    """Within the block, training-mode forwards of ``model`` (while ``active()``) run decoder layers ``>= layer`` on
    the tokens ``choose`` picks (:func:`pruned_forward`); the inner model's forward is restored on exit, also after an
    exception. Shared by RASTP (:func:`rastp_pruning`) and STAMP's semantic adaptive pruning
    (:mod:`llm_cloud.generative.stamp`)."""
    inner = _inner_model(model)
    n_layers = inner.config.num_hidden_layers
    if not 1 <= layer < n_layers:
        raise ValueError(f"pruning layer {layer} must be between 1 and num_layers - 1 = {n_layers - 1} (the model has "
                         f"{n_layers} decoder layers); lower the pruning layer or raise model.num_layers")
    had_own = "forward" in inner.__dict__
    saved = inner.__dict__.get("forward")
    inner.forward = pruned_forward(inner, layer, choose, inner.forward, active)
    try:
        yield model
    finally:
        if had_own:
            inner.forward = saved
        else:
            del inner.forward


def rastp_pruning(model: nn.Module, options: Any, active: Callable[[], bool] = lambda: True):
    """Within the block, training-mode forwards of ``model`` prune tokens from ``options.layer`` keeping
    ``options.keep`` of them (while ``active()``, e.g. after a warm-up).

    ``options`` has ``layer`` (int >= 1, < the number of decoder layers) and ``keep`` (0 < keep <= 1), e.g.
    :class:`llm_cloud.train.sft_config.RASTPOptions`.
    """
    keep = float(options.keep)
    if not 0 < keep <= 1:
        raise ValueError(f"rastp.keep {keep} must be in (0, 1]")
    return token_pruning(model, int(options.layer), rastp_chooser(keep), active)
