"""Faster CPU training kernels: dropout and the attention it sits in. Same model, same maths.

On the CPU, torch's dropout is one of the dearest things in a training step. Its mask comes
from ``bernoulli_``, one draw of the random generator per element; then a multiply and a
divide pass over the tensor. With MiniLM at batch 16 x 128 the 20 dropouts of a step (the
embeddings, three per layer, the head) cost 14-20% of a fine-tuning step. Inside the
attention it is worse: with dropout on, ``scaled_dot_product_attention`` leaves its fused
kernel for the math path (plus a "safe" softmax: three more passes over the scores).

``kernels="fast"`` (the default; :func:`install`) swaps in:

* :class:`FastDropout`: a mask of 16-bit random numbers, four from each 64-bit draw, kept
  where ``r >= p·2^16``, applied as ``x · (keep · s)`` with ``s = 1/(1 - p')``.
  ``p' = round(p·2^16)/2^16`` is the drop rate actually used (|p' - p| <= 2^-17; 0.1 -> 0.100006),
  and ``s`` divides by its keep rate, so the output's expectation is the input exactly, as
  with torch's dropout. The mask is a bool tensor, one byte per element (torch's too).
* The ``"ptcore"`` attention: in training with dropout on, and on the CPU, the plain
  ``softmax(q·kᵀ/√d + mask)·v`` of the eager attention, with the mask made additive once per
  layer on its small ``(N, 1, T, S)`` shape, the scale applied to ``q`` (``T x d``, not
  ``T x S``), and :class:`FastDropout` on the probabilities. Anything else (evaluation,
  dropout 0, CUDA) goes to transformers' own SDPA attention, unchanged.

``kernels="reference"`` puts torch's dropout and transformers' SDPA attention back.

What changes: the random stream, so a run's dropout masks (and thus its numbers) differ
from a ``reference`` run of the same seed, as they would between two seeds; what the masks
are drawn from does not. Evaluation runs through the very same SDPA code in both. The tests
(``tests/core/test_kernels.py``) check the keep rate, the scaling, that the backward uses the
forward's mask, and that with every element kept the attention equals SDPA's, in logits and
gradients.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .families import family_name

KERNELS = ("fast", "reference")
Kernels = Literal["fast", "reference"]
ATTENTION = "ptcore"  # the name of our attention in transformers' AttentionInterface
_BITS = 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A keep mask of ``shape`` (bool) for drop rate ``p``, and the scale 1/(1 - p') of the kept."""
    n = math.prod(shape)
    words = (n + 3) // 4  # four 16-bit numbers per 64-bit draw
    r = torch.randint(-(2**63), 2**63 - 1, (words,), dtype=torch.int64, device=device)
    r = r.view(torch.int16)[:n].view(shape)  # uniform in [-2^15, 2^15)
    cut = int(round(p * (1 << _BITS)))  # drop where r < cut - 2^15: probability cut / 2^16
    return r >= cut - (1 << (_BITS - 1)), 1.0 / (1.0 - cut / (1 << _BITS))


class _Dropout(torch.autograd.Function):
    """``x · m`` with ``m = keep · scale`` made in ``x``'s dtype: on the CPU a bool-to-float
    conversion and two multiplies take ~half the time of one ``where(keep, x·s, 0)``. The bool
    mask (one byte an element) is what is kept for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep, scale = keep_mask(x.shape, p, x.device)
        ctx.scale = scale
        ctx.save_for_backward(keep)
        return x * keep.to(x.dtype).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep.to(grad.dtype).mul_(ctx.scale), None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout with a 16-bit mask on the CPU; torch's own elsewhere and for p >= 1."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    return _Dropout.apply(x, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn by :func:`fast_dropout` (no parameters, no state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention-interface function: (N, heads, T, d), (N, heads, S, d) x2 ->
    ((N, T, heads, d), None). Training with dropout on the CPU: eager maths + FastDropout;
    anything else: transformers' SDPA attention."""
    if not (module.training and dropout > 0.0 and query.device.type == "cpu") or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))  # (N, heads, T, S)
    if attention_mask is not None:  # bool (N|1, 1, T, S), True = attend (the SDPA mask format)
        if attention_mask.dtype == torch.bool:
            attention_mask = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device).masked_fill_(
                ~attention_mask, torch.finfo(scores.dtype).min
            )
        scores = scores + attention_mask
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)  # (N, heads, T, S)
    out = torch.matmul(probs, value)  # (N, heads, T, d)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the same boolean masks as SDPA


def _swap_dropout(model: nn.Module, cls: type) -> None:
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout) and type(child) is not cls and type(child) in (nn.Dropout, FastDropout):
                new = cls(child.p, child.inplace)
                new.train(child.training)
                setattr(parent, name, new)


def install(model: nn.Module, kernels: Kernels, backbone: nn.Module) -> None:
    """Put the chosen kernels into ``model`` (every ``nn.Dropout`` in it) and ``backbone``
    (its attention, where it runs SDPA/eager attention through transformers' interface).
    Idempotent, and reversible: ``reference`` undoes ``fast``."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r}: use one of {KERNELS}")
    _swap_dropout(model, FastDropout if kernels == "fast" else nn.Dropout)
    config = backbone.config
    current = getattr(config, "_attn_implementation", None)
    if family_name(config) != "encoder":
        # T5's attention adds a position bias and decoder LMs group their key/value heads: both
        # keep transformers' own attention (the dropout swap above still applies)
        return
    if kernels == "fast" and current in ("sdpa", ATTENTION):
        _register()
        config._attn_implementation = ATTENTION
    elif kernels == "reference" and current == ATTENTION:
        config._attn_implementation = "sdpa"
