"""Fine-tuning: every backbone weight and the head train (the baseline every method meets)."""

from ..registration import FlopPlan, register_method
from .config import FinetuneConfig

__all__ = ['FinetuneConfig', 'FinetuneEncoder']


def flop_plan(options, layers: int) -> FlopPlan:
    """The whole encoder forward and backward, weight gradients included."""
    return FlopPlan(trains_weights=True)


register_method(
    "finetune",
    config=FinetuneConfig,
    encoder=f"{__name__}.model:FinetuneEncoder",
    description="fine-tuning baseline: all backbone weights + head",
    label="Fine-tuning",
    color="#0072B2",  # colour-blind-safe (Okabe-Ito) like every method's; fine-tuning keeps this blue everywhere
    marker="o",
    order=0,
    flops=flop_plan,
)


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('FinetuneEncoder',):
        from . import model  # deferred: the encoder pulls torch; names and options load without it

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
