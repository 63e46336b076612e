"""The encoder family: BERT-likes with a task head (the methods run the backbone themselves)."""

from __future__ import annotations

from .registry import register_family
from .base import Family


@register_family
class EncoderFamily(Family):
    name = "encoder"
    model_types = ("bert", "roberta", "xlm-roberta", "electra", "camembert", "deberta-v2")
    auto_class = "AutoModel"
    formats = ("head",)
    default_format = "head"
    generative = False

    def prefix_sites(self, config) -> dict[str, int]:
        return {"self": config.num_hidden_layers}
