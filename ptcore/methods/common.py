"""Building blocks shared by the prompt methods: shallow prompt insertion, deep prefixes."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
from transformers.masking_utils import create_bidirectional_mask

from ..errors import ConfigError  # noqa: F401
from ..families.cache import PrefixCache, cache_argument  # noqa: F401  (re-exported: the prefix plumbing lives with the families)
from .deberta_prefix import DebertaDeepPrefix, is_deberta_v2
from .layers import resolve_layers  # noqa: F401  (re-exported)


# ---------------------------------------------------------------- shallow (input-layer) prompts


def insert_prompt(
    embeds: torch.Tensor,  # (N, T, H) input token embeddings (word embeddings only)
    attention_mask: torch.Tensor,  # (N, T)
    token_type_ids: torch.Tensor,  # (N, T)
    prompt: torch.Tensor,  # (N, l, H) prompt vectors, already selected/mixed per instance
    split: torch.Tensor,  # (N,) long in [0, l]: prompt[j:] goes before the input, prompt[:j] after
    prompt_mask: Optional[torch.Tensor] = None,  # (N, l) 1 = prompt token is used (dynamic length)
    head: int = 1,  # leading tokens that stay in front of the prompt: 1 ([CLS]/<s>), 0 (T5: none)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assemble ``[CLS] P[j:] x [SEP]...`` ... ``P[:j] [SEP]`` per instance.

    The prefix part goes right after the first ``head`` tokens ([CLS]/<s>, so [CLS]-pooling
    still reads position 0; T5 has none: ``head=0`` gives ``P[j:] x P[:j] </s>``, the DP
    reference's layout) and the postfix part right before the last real token (the final
    [SEP] / </s>). Returns ``(embeds (N,T+l,H), mask (N,T+l), token_type_ids (N,T+l), index (N,T))``
    where ``index[n, t]`` is the slot of input token t in the assembled sequence.
    """
    n, t, h = embeds.shape
    l = prompt.shape[1]
    dev = embeds.device
    length = attention_mask.sum(1)  # (N,) real tokens, incl. [CLS] and final [SEP]
    n_front = (l - split).unsqueeze(1)  # (N,1) prompt tokens before the input
    pos = torch.arange(t, device=dev).unsqueeze(0)  # (1,T)
    # input token slots: [CLS] stays at 0, the body shifts by the prefix, the final [SEP]
    # and the padding shift by the whole prompt
    last = (length - 1).unsqueeze(1)  # (N,1)
    tok_slot = torch.where(pos < head, pos, torch.where(pos < last, pos + n_front, pos + l))  # (N,T)
    k = torch.arange(l, device=dev).unsqueeze(0)  # (1,l)
    front = k >= split.unsqueeze(1)  # (N,l) prompt token k is in the prefix part
    prm_slot = torch.where(front, head + k - split.unsqueeze(1), last + n_front + k)  # (N,l)

    out = embeds.new_zeros(n, t + l, h)
    out = out.scatter(1, tok_slot.unsqueeze(-1).expand(n, t, h), embeds)
    out = out.scatter(1, prm_slot.unsqueeze(-1).expand(n, l, h), prompt)
    pm = torch.ones(n, l, dtype=attention_mask.dtype, device=dev) if prompt_mask is None else prompt_mask.to(attention_mask.dtype)
    mask = attention_mask.new_zeros(n, t + l).scatter(1, tok_slot, attention_mask).scatter(1, prm_slot, pm)
    # prompt tokens take the segment of their neighbour: [CLS]'s for the prefix, the final [SEP]'s after
    last_type = token_type_ids.gather(1, last)  # (N,1)
    ptype = torch.where(front, token_type_ids[:, :1], last_type)
    types = token_type_ids.new_zeros(n, t + l).scatter(1, tok_slot, token_type_ids).scatter(1, prm_slot, ptype)
    return out, mask, types, tok_slot


def gather_tokens(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick the input tokens' states back out of an assembled sequence. (N,T+l,H) -> (N,T,H)"""
    return hidden.gather(1, index.unsqueeze(-1).expand(*index.shape, hidden.shape[-1]))


# ---------------------------------------------------------------- deep (per-layer) prefixes


class DeepPrefix(nn.Module):
    """Runs a backbone with key/value prefixes at some of its layers.

    Prefixes enter through a :class:`PrefixCache` (one per forward): a prompted layer attends
    over ``l + T`` columns, an un-prompted one over its ``T`` tokens only. The backbone builds
    the ``(l+T)``-column attention mask; when some layers have no prefix, a forward pre-hook
    hands them the plain mask of the ``T`` tokens instead, the mask a plain forward would use,
    so they compute exactly what the plain backbone computes (and, below the lowest prompted
    layer, nothing requires grad). Positions are passed explicitly: 0..T-1, not shifted by the
    prefix.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[int]):
        super().__init__()
        self.layers = list(layers)
        self.heads = backbone.config.num_attention_heads
        self._plain_mask: Optional[tuple] = None  # (mask,) while a forward runs; the mask may be None
        self._hooks = []
        for i, layer in enumerate(backbone.encoder.layer):
            if i not in self.layers:
                self._hooks.append(layer.register_forward_pre_hook(self._plain_attention_mask))

    def _plain_attention_mask(self, module, args):
        """Pre-hook of an un-prompted layer: its attention mask (positional argument 1) becomes
        the plain T-column one."""
        if self._plain_mask is None:
            return None
        return (args[0], self._plain_mask[0], *args[2:])

    def forward(
        self,
        backbone: nn.Module,
        input_ids: torch.Tensor,  # (N,T)
        attention_mask: torch.Tensor,  # (N,T)
        token_type_ids: torch.Tensor,  # (N,T)
        position_ids: torch.Tensor,  # (N,T)
        keys: torch.Tensor,  # (N, len(layers), heads, l, head_dim)
        values: torch.Tensor,  # (N, len(layers), heads, l, head_dim)
        prefix_mask: Optional[torch.Tensor] = None,  # (N,l) 1 = prefix slot visible (dynamic length)
    ) -> torch.Tensor:
        n, t = input_ids.shape
        l = keys.shape[3]
        # unbind, not keys[:, j]: its backward is one stack, not a zero-filled full-size
        # gradient per layer
        kv = dict(zip(self.layers, zip(keys.unbind(1), values.unbind(1))))  # layer -> (N,heads,l,d) x2
        pm = attention_mask.new_ones(n, l) if prefix_mask is None else prefix_mask.to(attention_mask.dtype)
        mask = torch.cat([pm, attention_mask], dim=1)  # (N, l+T): prefix columns first, like the keys
        if self._hooks:
            # positional: the embeddings argument is `inputs_embeds` in 5.24, `input_embeds` in 5.0
            embeds = keys.new_empty(n, t, backbone.config.hidden_size)  # only its shape/dtype/device are read
            self._plain_mask = (create_bidirectional_mask(backbone.config, embeds, attention_mask),)
        try:
            out = backbone(
                input_ids=input_ids,
                attention_mask=mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                **{cache_argument(type(backbone)): PrefixCache(kv, l)},
            )
        finally:
            self._plain_mask = None
        return out.last_hidden_state  # (N,T,H)


def make_deep_prefix(backbone: nn.Module, layers: Sequence[int]) -> nn.Module:
    """The deep-prefix runner for this backbone's family: a ``PrefixCache`` through the model's
    cache argument (BERT, RoBERTa, ELECTRA), or prefixes inside DeBERTa-v2/v3's disentangled
    attention (:mod:`ptcore.methods.deberta_prefix`). Same interface either way."""
    if is_deberta_v2(backbone.config):
        return DebertaDeepPrefix(backbone, layers)
    return DeepPrefix(backbone, layers)
