"""The T5 family (T5, T5 v1.1 / LM-adapt, Flan-T5, mT5): text to text, prompts in the encoder and decoder.

* A soft prompt (prompt tuning, Lester et al.) is ``l`` vectors in front of the encoder's
  input, as in the paper; the decoder reads their encoder states through cross-attention.
* Per-layer prefixes (P-Tuning v2) enter three sites, each with its own ``l`` keys/values
  per layer: the encoder's self-attention (``encoder``), the decoder's self-attention
  (``decoder``) and its cross-attention (``cross``). PEFT's prefix tuning reaches the decoder
  only.

How: a forward pre-hook on every prompted ``T5Attention`` hands it the layer's prefix
through its ``cache`` argument (the attention prepends what ``cache.update`` returns), the
mask with the prefix columns first (visible to every query; the decoder's own columns stay
causal), and the relative position bias of the longer key row. T5 shares one bias across a
stack's layers, computed in the first; here every layer gets the bias for its own key length
from the first layer's bucket table: a prefix slot sits before the first token (relative
positions ``-l..-1`` from it, as a past token would), input tokens keep their own relative
positions, and an un-prompted layer gets exactly the plain bias. Cross-attention has no
position bias in T5.

Generation is greedy. The encoder runs once; the decoder runs over the whole target so far
at every step (no decoder KV cache: targets here are short, and the prefixes then need no
cache of their own).
"""

from __future__ import annotations

from .base import Family
from .registry import register_family


@register_family
class T5Family(Family):
    name = "t5"
    model_types = ("t5", "mt5")
    auto_class = "AutoModelForSeq2SeqLM"
    formats = ("text",)
    default_format = "text"
    generative = True
    seq2seq = True

    def prefix_sites(self, config) -> dict[str, int]:
        dec = config.num_decoder_layers or config.num_layers
        return {"encoder": config.num_layers, "decoder": dec, "cross": dec}

    def kv_dims(self, config) -> tuple[int, int]:
        return config.num_heads, config.d_kv

    def hidden_size(self, config) -> int:
        return config.d_model

    def num_layers(self, config) -> int:
        return config.num_layers

    def runner(self, encoder):
        from .t5_run import T5Runner  # deferred: the runner needs torch, the family's facts do not

        return T5Runner(encoder)

    def truncate_layers(self, model, layers: int) -> None:
        import torch.nn as nn  # deferred: the family's facts load without torch

        for stack in (model.encoder, model.decoder):
            stack.block = nn.ModuleList(list(stack.block)[:layers])
        model.config.num_layers = layers
        model.config.num_decoder_layers = layers
