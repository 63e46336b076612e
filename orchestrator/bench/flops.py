"""FLOPs of one training step, counted explicitly (for MFU).

Convention (multiply-add = 2 FLOPs; only the encoder's matrix multiplies are counted):

* An encoder layer of width ``H`` and FFN width ``I`` holds ``P = 4·H² + 2·H·I`` matrix weights
  (query, key, value, output; FFN in and out). Biases, LayerNorm, GELU, softmax, the embedding
  lookup, pooling, the task head and prompt MLPs are left out (well under 1% here).
* **Forward**, per sequence and layer: ``2·P·T`` for the matrices plus attention
  ``QKᵀ`` (``2·T·T_kv·H``) and ``softmax·V`` (``2·T·T_kv·H``) = ``4·T·T_kv·H``, where ``T`` is
  the tokens the layer processes and ``T_kv`` the keys they attend to. Summed over layers:
  ``2·P_nonembed·T + 4·layers·T·T_kv·H`` per sequence.
* **Real tokens only**: ``T`` counts the non-padding tokens of each sequence (``n``), plus the
  prompt positions a shallow prompt inserts (``T = n + l``: prompt tuning, shallow dynamic
  prompting). ``T_kv = T`` plus the ``l`` prefix slots at layers that carry a P-Tuning v2 prefix.
  Padding, and the masked zero prefixes ptcore feeds to un-prompted layers, are not useful work
  and are not counted.
* **Backward** splits into the input-gradient path and the weight gradients. For a matrix
  ``y = xW`` both ``dL/dx = dy·Wᵀ`` and ``dL/dW = xᵀ·dy`` cost what the forward did
  (``2·P·T`` each); attention has no weights but two activation operands, so its input-gradient
  path costs **2×** its forward (``8·T·T_kv·H``). Fine-tuning therefore pays
  ``backward = 2 × forward`` (the usual 6·P·tokens rule). Prompt methods train no backbone
  matrix, so they pay the input-gradient path only, and only through the layers the gradient
  must cross: from the top down to the lowest layer with a trainable prompt. At that lowest
  layer of a deep prefix the layer's own input needs no gradient, so its query/key/value
  projections get none and attention gets 3 of its 4 operand gradients (``dK, dP, dV``,
  not ``dQ``): ``2·(H² + 2·H·I)·T + 6·T·T_kv·H``. Layers below it run forward only.
* Dynamic prompting with instance-level choices runs the frozen backbone once more on the
  unprompted input (no gradient): forward FLOPs only.

What a method makes the encoder do (prompt positions, prefix slots and where, weight
gradients, the lowest layer the gradient reaches, an extra forward pass) is its
:class:`~ptcore.methods.FlopPlan`, registered by the method itself
(``ptcore/methods/<name>/__init__.py``); this module only counts.

``MFU = useful FLOPs per step / step time / measured matmul peak`` (``peak.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ptcore.methods import METHODS, FlopPlan

__all__ = ["EncoderDims", "FlopPlan", "plan_for", "real_lengths", "step_flops"]


@dataclass(frozen=True)
class EncoderDims:
    layers: int
    hidden: int
    intermediate: int

    @property
    def layer_params(self) -> int:
        """Matrix weights of one layer: Q, K, V, O (4·H²) + FFN in/out (2·H·I)."""
        return 4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate

    @property
    def nonembed_params(self) -> int:
        return self.layers * self.layer_params

    @classmethod
    def from_config(cls, config) -> "EncoderDims":
        return cls(int(config.num_hidden_layers), int(config.hidden_size), int(config.intermediate_size))


def plan_for(method: str, method_args: Mapping[str, Any], layers: int) -> FlopPlan:
    """The FlopPlan a ptcore method registers (``register_method(..., flops=...)``) for its
    options on a ``layers``-layer encoder; ValueError for a method that is not registered or
    registers no plan."""
    if method not in METHODS:
        raise ValueError(f"no FLOP plan: {METHODS.unknown_message(method)}")
    return METHODS.get(method).flop_plan(method_args, layers)


def step_flops(dims: EncoderDims, real_lengths: Iterable[int], plan: FlopPlan) -> dict[str, float]:
    """Useful FLOPs of one training step over a batch whose sequences hold ``real_lengths``
    non-padding tokens. -> {"forward", "backward", "total"}"""
    h, i = dims.hidden, dims.intermediate
    p = dims.layer_params
    after_qkv = 2 * (h * h + 2 * h * i)  # per token: output projection + FFN (input-gradient FLOPs)
    fwd = bwd = 0.0
    for n in real_lengths:
        n = int(n)
        if n <= 0:
            continue
        t = n + plan.extra_tokens
        for layer in range(dims.layers):
            t_kv = t + (plan.prefix if layer in plan.prefix_layers else 0)
            lin = 2.0 * p * t
            att = 4.0 * t * t_kv * h
            fwd += lin + att
            low = plan.lowest_grad_layer
            if low is None or layer < low:
                continue  # no gradient reaches this layer
            if layer > low or plan.input_grad_at_lowest:
                bwd += lin + 2.0 * att  # input-gradient path: matrices 1x, attention 2x
            else:
                bwd += after_qkv * t + 1.5 * att  # lowest prompted layer: no dQ, no Q/K/V input grads
            if plan.trains_weights:
                bwd += lin  # weight gradients of this layer's matrices
        if plan.extra_forward_pass:
            fwd += dims.layers * (2.0 * p * n + 4.0 * n * n * h)
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def real_lengths(attention_mask) -> Sequence[int]:
    """Non-padding tokens per sequence of a (B, T) 0/1 mask (tensor or nested lists)."""
    if hasattr(attention_mask, "sum") and hasattr(attention_mask, "tolist"):
        return [int(x) for x in attention_mask.sum(-1).tolist()]
    return [int(sum(row)) for row in attention_mask]
