"""Dynamic prompting (Yang et al., 2023) for encoders: per-task or per-instance choice of the
prompt's position, length and (pool) contents, over shallow or deep prompts."""

from ..ptuning_v2 import prefix_flop_plan
from ..registration import FlopPlan, register_method
from .config import DynamicConfig

__all__ = ["DynamicConfig", "DynamicEncoder", "NOTES"]

# Departures from the paper (Yang et al., 2023) and its reference code (the authors' OpenPrompt
# fork, tutorial/adap_ins_pos_main.py and openprompt/prompts/soft_ins_pos_adaptive.py), and
# choices where they leave room. The paper prompts T5 LM-adapt text to text (and ViTs).
NOTES = (
    "Backbone: T5 text to text (the paper's) and encoders with a task head, with position, length and pool choices; "
    "decoder LMs text to text with length and pool choices only (the position choice is refused there).",
    "Position layout: T5 reads P[j:] x P[:j] </s> (the reference's assemble_soft_template); an encoder reads "
    "[CLS] P[j:] x P[:j] [SEP], its first token kept first.",
    "Default: instance-level position for a shallow prompt (the paper's headline); length and pool are opt-in; "
    "a config with nothing dynamic is refused.",
    "Instance features: the mean over real tokens of the frozen backbone's last hidden states (T5: its encoder's) on the "
    "unprompted input, one extra gradient-free pass per batch; the reference averages over every position of the padded batch.",
    "Selectors: one linear layer each for position (l+1 split points) and length, zero-initialised, on the L2-normalised pooled input "
    "(selector: linear_relu is the reference's Linear + ReLU on the pooled input, default init); task-level choices are learned logits.",
    "Gradient estimator: straight-through Gumbel-Softmax (hard one-hot forward, soft gradient) for position and length; "
    "the pool is a plain per-instance softmax mixture (no Gumbel noise).",
    "Position gradient: by default the reference code's (estimator: mixture): the straight-through mixture of the l+1 "
    "assembled sequences (any encoder, DeBERTa included); mixture_soft is its soft forward, and first_order this tool's "
    "cheaper estimate from the position and segment embeddings (absolute positions only).",
    "Temperature: annealed over the run from tau0 = 1.0 to tau_min = 0.1 (exponential by default; linear and cosine "
    "available); anneal: reference is the reference code's schedule, floored at tau_min (it uses 0.5).",
    "Evaluation: deterministic argmax of the selector logits, no Gumbel noise (the reference samples its placement at evaluation too).",
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


from . import preset  # noqa: E402,F401  registers the `dpt` preset (ptcore.presets), after the method it sets
