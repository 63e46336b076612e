"""Building blocks shared by the prompt methods: shallow prompt insertion, deep prefixes."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
from transformers import DynamicCache

from ..errors import ConfigError
from transformers.masking_utils import create_bidirectional_mask


# ---------------------------------------------------------------- shallow (input-layer) prompts


def insert_prompt(
    embeds: torch.Tensor,  # (N, T, H) input token embeddings (word embeddings only)
    attention_mask: torch.Tensor,  # (N, T)
    token_type_ids: torch.Tensor,  # (N, T)
    prompt: torch.Tensor,  # (N, l, H) prompt vectors, already selected/mixed per instance
    split: torch.Tensor,  # (N,) long in [0, l]: prompt[j:] goes before the input, prompt[:j] after
    prompt_mask: Optional[torch.Tensor] = None,  # (N, l) 1 = prompt token is used (dynamic length)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assemble ``[CLS] P[j:] x [SEP]...`` ... ``P[:j] [SEP]`` per instance.

    The prefix part goes right after the first token ([CLS]/<s>, so [CLS]-pooling still
    reads position 0) and the postfix part right before the last real token (the final
    [SEP]). Returns ``(embeds (N,T+l,H), mask (N,T+l), token_type_ids (N,T+l), index (N,T))``
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
    tok_slot = torch.where(pos == 0, pos, torch.where(pos < last, pos + n_front, pos + l))  # (N,T)
    k = torch.arange(l, device=dev).unsqueeze(0)  # (1,l)
    front = k >= split.unsqueeze(1)  # (N,l) prompt token k is in the prefix part
    prm_slot = torch.where(front, 1 + k - split.unsqueeze(1), last + n_front + k)  # (N,l)

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


def resolve_layers(depth, num_layers: int) -> list[int]:
    """``None`` -> every layer; int k -> the top k layers; a list -> those layer indices."""
    if depth is None:
        return list(range(num_layers))
    if isinstance(depth, int):
        if not 1 <= depth <= num_layers:
            raise ConfigError(f"depth={depth} is out of range for a {num_layers}-layer backbone (1..{num_layers})")
        return list(range(num_layers - depth, num_layers))
    layers = sorted(set(int(i) for i in depth))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise ConfigError(f"depth layers {bad or '[]'} are not valid layer indices 0..{num_layers - 1}")
    return layers


class DeepPrefix(nn.Module):
    """Runs a backbone with key/value prefixes at some of its layers.

    Prefixes enter through a fresh ``DynamicCache`` each forward (the cache is mutated by
    the attention layers). All layers share one attention mask, so layers *without* a
    prompt get zero prefixes and a mask that hides the prefix columns, swapped in by a
    forward pre-hook. Positions are passed explicitly: 0..T-1, not shifted by the prefix.
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[int]):
        super().__init__()
        self.num_layers = backbone.config.num_hidden_layers
        self.layers = list(layers)
        self.heads = backbone.config.num_attention_heads
        self.head_dim = backbone.config.hidden_size // self.heads
        self._unprompted_mask: Optional[torch.Tensor] = None
        self._hooks = []
        for i, layer in enumerate(backbone.encoder.layer):
            if i not in self.layers:
                self._hooks.append(layer.register_forward_pre_hook(self._hide_prefix))

    def _hide_prefix(self, module, args):
        if self._unprompted_mask is None:
            return None
        return (args[0], self._unprompted_mask, *args[2:])

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
        zero = keys.new_zeros(n, self.heads, l, self.head_dim)
        kv = [(zero, zero)] * self.num_layers
        for j, layer in enumerate(self.layers):
            kv[layer] = (keys[:, j], values[:, j])
        pm = attention_mask.new_ones(n, l) if prefix_mask is None else prefix_mask.to(attention_mask.dtype)
        mask = torch.cat([pm, attention_mask], dim=1)  # (N, l+T): prefix columns first, like the cache
        if len(self.layers) < self.num_layers:
            hidden_mask = torch.cat([torch.zeros_like(pm), attention_mask], dim=1)
            self._unprompted_mask = create_bidirectional_mask(
                config=backbone.config,
                inputs_embeds=keys.new_empty(n, t, backbone.config.hidden_size),
                attention_mask=hidden_mask,
            )
        try:
            out = backbone(
                input_ids=input_ids,
                attention_mask=mask,
                token_type_ids=token_type_ids,
                position_ids=position_ids,
                past_key_values=DynamicCache(ddp_cache_data=kv),
            )
        finally:
            self._unprompted_mask = None
        return out.last_hidden_state  # (N,T,H)
