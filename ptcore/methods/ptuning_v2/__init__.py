"""P-Tuning v2 (Liu et al., ACL 2022): trainable key/value prefixes at every (or some) layer."""

from ..layers import resolve_layers
from ..registration import FlopPlan, register_method
from .config import PTuningV2Config

__all__ = ['PTuningV2Config', 'PTuningV2Encoder', 'PrefixEncoder', 'prefix_flop_plan']

NOTES = (
    "As the reference: prefix dropout drawn per instance; prefixes (or, reparameterized, the MLP's input tokens) start at N(0, 1); the MLP is Linear-Tanh-Linear.",
    "Positions of the input run 0..T-1, not shifted by the prefix length as in the reference code and PEFT.",
    "On T5, prefixes enter the encoder's self-attention, the decoder's self-attention and the cross-attention (PEFT's prefix tuning reaches the decoder only); each site has its own prefixes, `depth` counts the layers of each stack.",
    "Head: a linear layer on mean-pooled states by default (the reference reads BERT's pooler); `pooling: pooler` gives the reference's choice.",
)


def prefix_flop_plan(options, layers: int, extra_forward_pass: bool = False) -> FlopPlan:
    """``prompt_length`` key/value slots at each prompted layer (``depth``); the gradient goes
    down to the lowest prompted layer, whose own input needs none."""
    prompted = tuple(resolve_layers(options.get("depth"), layers))
    return FlopPlan(
        prefix=int(options.get("prompt_length", 16)),
        prefix_layers=prompted,
        lowest_grad_layer=min(prompted),
        input_grad_at_lowest=False,
        extra_forward_pass=extra_forward_pass,
    )


def flop_plan(options, layers: int) -> FlopPlan:
    return prefix_flop_plan(options, layers)


register_method(
    "ptuning_v2",
    config=PTuningV2Config,
    encoder=f"{__name__}.model:PTuningV2Encoder",
    description="deep per-layer prefix keys/values (P-Tuning v2)",
    label="P-Tuning v2",
    color="#009E73",
    marker="^",
    order=30,
    flops=flop_plan,
    notes=NOTES,
)


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('PTuningV2Encoder', 'PrefixEncoder'):
        from . import model  # deferred: the encoder pulls torch; names and options load without it

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
