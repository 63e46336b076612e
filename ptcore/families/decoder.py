"""The decoder family: causal LMs (GPT-2, Llama, Mistral, Qwen2/3, Gemma) that take a KV ``Cache``.

The family's facts (no torch); how prompts enter and how it generates: :mod:`ptcore.families.decoder_run`.
"""

from __future__ import annotations

from .base import Family
from .registry import register_family


@register_family
class DecoderFamily(Family):
    name = "decoder"
    model_types = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma")
    auto_class = "AutoModelForCausalLM"
    formats = ("text", "head")
    default_format = "text"
    generative = True

    def prefix_sites(self, config) -> dict[str, int]:
        return {"self": self.num_layers(config)}

    def num_layers(self, config) -> int:
        return config.num_hidden_layers if hasattr(config, "num_hidden_layers") else config.n_layer

    def hidden_size(self, config) -> int:
        return config.hidden_size if hasattr(config, "hidden_size") else config.n_embd

    def kv_dims(self, config) -> tuple[int, int]:
        if config.model_type == "gpt2":
            return config.n_head, config.n_embd // config.n_head
        return super().kv_dims(config)

    def runner(self, encoder):
        from .decoder_run import DecoderRunner  # deferred: the runner needs torch, the family's facts do not

        return DecoderRunner(encoder)

    def truncate_layers(self, model, layers: int) -> None:
        import torch.nn as nn  # deferred: the family's facts load without torch

        from .decoder_run import decoder_blocks  # deferred: the runner module needs torch

        holder, attr = decoder_blocks(model)
        setattr(holder, attr, nn.ModuleList(list(getattr(holder, attr))[:layers]))
        if model.config.model_type == "gpt2":
            model.config.n_layer = layers
        else:
            model.config.num_hidden_layers = layers
            if getattr(model.config, "layer_types", None):
                model.config.layer_types = model.config.layer_types[:layers]
