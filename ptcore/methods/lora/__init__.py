"""LoRA (Hu et al., 2022) through huggingface/peft: low-rank updates beside frozen weights."""

from ..layers import resolve_layers
from ..registration import FlopPlan, register_method
from .config import LoraConfig

__all__ = ['LoraConfig', 'LoraEncoder', 'inject_lora']

NOTES = (
    "peft's LoraConfig injected into the backbone (peft.inject_adapter_in_model): query and value by default, rank 8, alpha 16, dropout 0.1; the head as for every method.",
)


def flop_plan(options, layers: int) -> FlopPlan:
    """The frozen encoder's forward, and backward down to the lowest adapted layer. LoRA's own
    low-rank matmuls (2 x r x (in + out) per token per adapted layer) are left out: under 3%
    of a layer at r=8 on MiniLM."""
    adapted = resolve_layers(list(options["layers"]) if options.get("layers") else None, layers)
    return FlopPlan(lowest_grad_layer=min(adapted), input_grad_at_lowest=False)


register_method(
    "lora",
    config=LoraConfig,
    encoder=f"{__name__}.model:LoraEncoder",
    description="low-rank updates of the attention projections (LoRA, via huggingface/peft)",
    label="LoRA",
    color="#000000",
    marker="v",
    order=10,
    flops=flop_plan,
    notes=NOTES,
)


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('LoraEncoder', 'inject_lora'):
        from . import model  # deferred: the encoder pulls torch; names and options load without it

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
