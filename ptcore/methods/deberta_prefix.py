"""Deep prefixes for DeBERTa-v2/v3: key/value prefixes inside disentangled attention.

DeBERTa's attention has no KV cache to prepend to (PEFT's prefix tuning fails on it: "forward()
got an unexpected keyword argument 'past_key_values'"), and its scores carry relative-position
terms (content-to-position, position-to-content) that are defined between tokens only. As
adapter-hub/adapters does, the prefix joins **content-to-content** attention only::

    scores[i, prefix s] = q_i · pk_s / scale                      (no position terms)
    scores[i, token j]  = q_i · k_j / scale + c2p(i, j) + p2c(i, j)  (exactly DeBERTa's)
    out_i = softmax_over(prefix + tokens)(scores[i]) · [pv; v]

with DeBERTa's own ``scale`` (sqrt of head_dim x the number of score terms), so a prefix score
is on the scale of a content score. A prefix column is visible to a query row that is a real
token (and, for dynamic length, where its slot is used). Un-prompted layers run DeBERTa's own
attention, untouched.

:class:`DebertaDeepPrefix` has :class:`~ptcore.methods.common.DeepPrefix`'s interface; the
prompted layers' ``attention.self.forward`` is replaced on the instance (the module, its
weights and their names stay as they are) by :func:`prefixed_attention`, which reads the
prefixes of the forward in progress from its owner.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch
import torch.nn as nn

DEBERTA_V2 = ("deberta-v2",)


def is_deberta_v2(config) -> bool:
    return getattr(config, "model_type", None) in DEBERTA_V2


def prefixed_attention(attn: nn.Module, owner: "DebertaDeepPrefix", layer: int, hidden_states, attention_mask,
                       output_attentions=False, query_states=None, relative_pos=None, rel_embeddings=None):
    """``DisentangledSelfAttention.forward`` with this forward's prefix at ``layer`` (see module doc).
    hidden_states (N,T,H); attention_mask (N,1,T,T) bool-like; returns ((N,T,H), None)."""
    kv = owner.current.get(layer) if owner.current else None
    if kv is None:
        return type(attn).forward(attn, hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings)
    from transformers.models.deberta_v2.modeling_deberta_v2 import scaled_size_sqrt

    pk, pv, pmask = kv  # (N, heads, l, d) x2, (N, l) or None
    heads = attn.num_attention_heads
    if query_states is None:
        query_states = hidden_states
    q = attn.transpose_for_scores(attn.query_proj(query_states), heads)  # (N*heads, T, d)
    k = attn.transpose_for_scores(attn.key_proj(hidden_states), heads)
    v = attn.transpose_for_scores(attn.value_proj(hidden_states), heads)
    n, _, l, d = pk.shape
    t = q.shape[1]
    scale_factor = 1 + ("c2p" in attn.pos_att_type) + ("p2c" in attn.pos_att_type)
    scale = scaled_size_sqrt(q, scale_factor).to(dtype=q.dtype)
    scores = torch.bmm(q, k.transpose(-1, -2) / scale)  # (N*heads, T, T) content-to-content
    if attn.relative_attention:
        rel = attn.pos_dropout(rel_embeddings)
        scores = scores + attn.disentangled_attention_bias(q, k, relative_pos, rel, scale_factor)  # c2p + p2c
    pk = pk.reshape(n * heads, l, d).to(q.dtype)
    pv = pv.reshape(n * heads, l, d).to(v.dtype)
    pre = torch.bmm(q, pk.transpose(-1, -2) / scale)  # (N*heads, T, l): prefix, content only
    scores = torch.cat([pre, scores], dim=-1).view(n, heads, t, l + t)

    mask = attention_mask.bool()  # (N,1,T,T): DeBERTa's token-token mask
    real_row = mask.any(-1, keepdim=True)  # (N,1,T,1): the query is a real token
    cols = real_row.expand(n, 1, t, l)
    if pmask is not None:
        cols = cols & pmask.bool()[:, None, None, :]
    mask = torch.cat([cols, mask], dim=-1)  # (N,1,T,l+T)
    scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min)
    probs = attn.dropout(nn.functional.softmax(scores, dim=-1)).view(n * heads, t, l + t)
    ctx = torch.bmm(probs[..., :l], pv) + torch.bmm(probs[..., l:], v)  # (N*heads, T, d)
    ctx = ctx.view(n, heads, t, -1).permute(0, 2, 1, 3).contiguous()
    return ctx.view(n, t, -1), None


class DebertaDeepPrefix(nn.Module):
    """:class:`~ptcore.methods.common.DeepPrefix` for DeBERTa-v2/v3 (see the module doc)."""

    def __init__(self, backbone: nn.Module, layers: Sequence[int]):
        super().__init__()
        self.layers = list(layers)
        self.heads = backbone.config.num_attention_heads
        self.current: Optional[dict] = None  # layer -> (keys, values, prefix mask) while a forward runs
        for i in self.layers:
            attn = backbone.encoder.layer[i].attention.self
            # a weak link back: the attention must not keep this module (and the model) alive twice
            attn.forward = functools.partial(prefixed_attention, attn, _Owner(self), i)

    def forward(self, backbone, input_ids, attention_mask, token_type_ids, position_ids, keys, values,
                prefix_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        # keys/values: (N, len(layers), heads, l, head_dim); prefix_mask: (N, l) or None
        self.current = {layer: (k, v, prefix_mask) for layer, k, v in zip(self.layers, keys.unbind(1), values.unbind(1))}
        try:
            out = backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           position_ids=position_ids)
        finally:
            self.current = None
        return out.last_hidden_state  # (N,T,H)


class _Owner:
    """What the patched attention reads: the owner's ``current`` prefixes, through a weak reference."""

    def __init__(self, owner: DebertaDeepPrefix):
        import weakref

        self._ref = weakref.ref(owner)

    @property
    def current(self) -> Optional[dict]:
        owner = self._ref()
        return owner.current if owner is not None else None
