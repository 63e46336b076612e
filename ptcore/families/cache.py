"""Key/value prefixes through a model's cache argument (the encoder and decoder families)."""

from __future__ import annotations

import functools
import inspect
from typing import Optional

import torch
from transformers import DynamicCache


@functools.lru_cache(maxsize=None)
def cache_argument(model_cls: type) -> str:
    """Name of the KV-cache argument of ``model_cls.forward``, read once per class.

    transformers 5.24 calls it ``cache`` (``past_key_values`` still works but warns on every
    call and goes away in 5.40); 5.0 only knows ``past_key_values``.
    """
    params = inspect.signature(model_cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class PrefixCache(DynamicCache):
    """Read-only per-layer key/value prefixes for one encoder forward.

    Each self-attention calls ``update(keys, values, layer_idx)`` and attends over what it
    returns: ``[prefix; keys]`` at a prompted layer, the layer's own keys/values untouched at
    any other, so an un-prompted layer runs exactly as in a plain forward. Nothing is stored:
    a ``DynamicCache`` built from the prefixes would first copy each one onto an empty tensor
    (and, for un-prompted layers, copy the new keys onto an empty one) before the
    concatenation the attention needs. Subclassing ``DynamicCache`` keeps the rest of the
    ``Cache`` interface the models may touch.
    """

    def __init__(self, prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]], length: int):
        super().__init__()
        self.prefixes = prefixes  # layer index -> (keys, values), each (N, heads, l, head_dim)
        self.prefix_length = length

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """(N, heads, T, d) x2 -> (N, heads, l+T, d) x2 at a prompted layer, unchanged elsewhere."""
        kv = self.prefixes.get(layer_idx)
        if kv is None:
            return key_states, value_states
        return torch.cat([kv[0], key_states], dim=-2), torch.cat([kv[1], value_states], dim=-2)

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        return self.prefix_length if layer_idx in self.prefixes else 0
