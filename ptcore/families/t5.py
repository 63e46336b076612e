"""The T5 family (T5, T5 v1.0, v1.1 / LM-adapt, Flan-T5, mT5): text to text, prompts in the encoder and decoder.

The family's facts (no torch); how prompts enter and how it generates: :mod:`ptcore.families.t5_run`.
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
