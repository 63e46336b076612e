"""Shallow prompt tuning (Lester et al., 2021): a soft prompt on the input embeddings only."""

from ..registration import FlopPlan, register_method
from .config import PromptTuningConfig

__all__ = ['PromptTuningConfig', 'PromptTuningEncoder']

NOTES = (
    "The prompt extends the input (the input is never cut to make room) wherever the position table has room.",
    "On an encoder, a task head reads the prompted states; on T5 and decoder LMs (format text) the prompt sits in front of the (encoder) input and the model writes the label words, as in Lester et al.; init from random vocabulary embeddings.",
)


def flop_plan(options, layers: int) -> FlopPlan:
    """``prompt_length`` more positions in every sequence, through every layer both ways."""
    return FlopPlan(extra_tokens=int(options.get("prompt_length", 20)))


register_method(
    "prompt_tuning",
    config=PromptTuningConfig,
    encoder=f"{__name__}.model:PromptTuningEncoder",
    description="shallow soft prompt on the input embeddings (Lester et al.)",
    label="Prompt tuning",
    color="#E69F00",
    marker="s",
    order=20,
    flops=flop_plan,
    notes=NOTES,
)


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('PromptTuningEncoder',):
        from . import model  # deferred: the encoder pulls torch; names and options load without it

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
