import torch

from ...backbones import Backbone
from ...errors import ConfigError
from ..finetune import FinetuneEncoder
from .config import LoraConfig


def inject_lora(model: torch.nn.Module, config: LoraConfig) -> None:
    """peft's LoRA layers put into ``model`` in place (``peft.inject_adapter_in_model``): each
    targeted ``nn.Linear`` becomes a ``LoraLayer`` around it (``base_layer``) with ``lora_A`` /
    ``lora_B``; B starts at zero, so the adapted model starts as the backbone."""
    import peft

    targets = list(config.target_modules) if config.target_modules else default_targets(model.config)
    lora = peft.LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
        bias=config.bias, layers_to_transform=list(config.layers) if config.layers is not None else None,
    )
    try:
        peft.inject_adapter_in_model(lora, model)
    except ValueError as e:  # e.g. no module matched target_modules
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"method 'lora': {str(e).splitlines()[0]}; this backbone's linear layers: {', '.join(names)}") from None


def default_targets(config) -> list[str]:
    """peft's default LoRA targets for this model type (BERT-likes: query, value; DeBERTa-v2:
    query_proj, value_proj)."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    except ImportError:  # pragma: no cover - older peft layout
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS
    targets = DEFAULTS.get(config.model_type)
    if not targets:
        raise ConfigError(f"method 'lora': no default target modules for model type {config.model_type!r}; set target_modules")
    return list(targets)


class LoraEncoder(FinetuneEncoder):
    """The backbone with LoRA updates in its targeted linear layers; only they (and, by option,
    biases and LayerNorms) train. The forward is fine-tuning's: the plain (adapted) backbone."""

    def __init__(self, backbone: Backbone, config: LoraConfig):
        super().__init__(backbone, config)  # freezes every backbone weight
        inject_lora(self.backbone, config)  # adds trainable lora_A / lora_B (and biases, per `bias`)
        if config.train_layernorm:
            for name, module in self.backbone.named_modules():
                if isinstance(module, torch.nn.LayerNorm):
                    for p in module.parameters():
                        p.requires_grad_(True)
