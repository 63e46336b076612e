"""Dynamic prompting (Yang et al., 2023) for encoders: per-task or per-instance choice of the
prompt's position, length and (pool) contents, over shallow or deep prompts."""

from ..ptuning_v2 import prefix_flop_plan
from ..registration import FlopPlan, register_method
from .config import DynamicConfig

__all__ = ["DynamicConfig", "DynamicEncoder", "NOTES"]

# Departures from the paper (Yang et al., 2023), and choices where it leaves room. The paper
# prompts T5 (text-to-text) and vision transformers; this is its encoder transfer.
NOTES = (
    "Backbone: encoders with a task head, and T5 and decoder LMs text to text with length and pool choices only; "
    "the position choice (the paper's headline, on T5) runs on absolute-position encoders only (the paper prompts T5 text-to-text and ViTs).",
    "Default: instance-level position for a shallow prompt (the paper's headline); length and pool are opt-in; "
    "a config with nothing dynamic is refused.",
    "Instance features: mean-pooled last hidden states of the frozen backbone on the unprompted input "
    "(one extra gradient-free backbone pass per batch, ~2x the encoder cost of prompt tuning).",
    "Selectors: one linear layer each for position (l+1 split points) and length, zero-initialised, on the L2-normalised pooled input "
    "(selector: linear_relu is the reference's Linear + ReLU on the pooled input, default init); task-level choices are learned logits.",
    "Gradient estimator: straight-through Gumbel-Softmax (hard one-hot forward, soft gradient) for position and length; "
    "the pool is a plain per-instance softmax mixture (no Gumbel noise).",
    "Position gradient: by default the reference code's (estimator: mixture): the straight-through mixture of the l+1 "
    "assembled sequences (any encoder, DeBERTa included); mixture_soft is its soft forward, and first_order this tool's "
    "cheaper estimate from the position and segment embeddings (absolute positions only).",
    "Temperature: annealed over the run from tau0 = 1.0 to tau_min = 0.1 (exponential by default; linear and cosine "
    "available); anneal: reference is the reference code's schedule, floored at tau_min (it uses 0.5).",
    "Evaluation: deterministic argmax of the selector logits, no Gumbel noise.",
    "Length: candidates l/4, l/2, 3l/4, l by default; unused slots are masked in attention, not removed (on T5 the kept slots take the relative positions of a prompt of the chosen length).",
    "Deep variant (base: deep, dynamic length/pool over P-Tuning v2 prefixes) is this tool's extension, not in the paper; "
    "it has no position choice.",
)


def flop_plan(options, layers: int) -> FlopPlan:
    """Shallow: ``prompt_length`` more positions in every sequence; deep: P-Tuning v2's
    prefixes. Instance-level choices (and a pool) add a no-grad forward over the unprompted input."""
    position, length = options.get("position", "none"), options.get("length", "none")
    pooled = int(options.get("pool_size", 1)) > 1
    if options.get("base", "shallow") == "deep":
        return prefix_flop_plan(options, layers, extra_forward_pass=length == "instance" or pooled)
    extra = "instance" in (position, length) or pooled
    return FlopPlan(extra_tokens=int(options.get("prompt_length", 16)), extra_forward_pass=extra)


register_method(
    "dynamic",
    config=DynamicConfig,
    encoder=f"{__name__}.model:DynamicEncoder",
    description="dynamic prompting: Gumbel-picked prompt position/length + instance prompt pool, shallow or deep (Yang et al. 2023)",
    label="Dynamic prompting",
    color="#CC79A7",
    marker="D",
    order=40,
    flops=flop_plan,
    notes=NOTES,
)


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name == "DynamicEncoder":
        from .model import DynamicEncoder  # deferred: the encoder pulls torch; names and options load without it

        return DynamicEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
