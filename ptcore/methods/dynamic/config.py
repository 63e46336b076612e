from typing import ClassVar, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..config_base import MethodConfig

Level = Literal["none", "task", "instance"]


class DynamicConfig(MethodConfig):
    """Dynamic prompting (Yang et al., 2023) for encoders, over shallow or deep prompts.

    Each forward picks, per instance, *where* the prompt goes (a split point j: the input
    becomes ``[CLS] P[j:] x P[:j] [SEP]``), *how long* it is (one of ``length_candidates``;
    the unused slots are hidden by the attention mask) and, with ``pool_size > 1``, a
    per-instance softmax mixture of ``pool_size`` prompt sets. Discrete choices are
    Gumbel-Softmax straight-through samples while training (temperature annealed from
    ``tau0`` to ``tau_min``) and a deterministic argmax at evaluation.

    ``task`` choices are learned logits shared by all inputs; ``instance`` choices (and the
    pool weights) come from a linear layer on the mean-pooled output of the frozen backbone
    on the *unprompted* input: one extra forward pass of the backbone per batch (no
    gradient, no prompt), i.e. roughly 2x the encoder cost of plain prompt tuning.
    """

    # added later: earlier runs keep their hashes (estimator first_order was the only one, then the default)
    hash_only_if_set: ClassVar[dict] = {"estimator": "first_order", "selector": "linear", "anneal_rate": 3e-6}

    @classmethod
    def hashed_options(cls, options: dict) -> dict:
        """As :meth:`MethodConfig.hashed_options`, less what no forward reads: the estimator
        without a position choice, the reference schedule's rate under another schedule."""
        out = super().hashed_options(options)
        if options.get("position", "none") == "none":
            out.pop("estimator", None)
        if options.get("anneal") != "reference":
            out.pop("anneal_rate", None)
        return out

    base: Literal["shallow", "deep"] = Field(
        "shallow", description="shallow: Lester-style input prompt; deep: P-Tuning v2 key/value prefixes at every (or `depth`) layers"
    )
    prompt_length: int = Field(16, ge=1, le=1024, description="prompt vectors (shallow) / prefix slots per layer (deep), l")
    # default: the DP paper's headline configuration for a shallow prompt (instance-level
    # position); deep prefixes have no position, so they default to 'none'
    position: Optional[Level] = Field(
        None, validate_default=True,
        description="learn the split point j in 0..l (shallow only); none: whole prompt in front "
        "(default: instance for shallow, none for deep)",
    )
    # how the position choice gets its gradient (ptcore/methods/dynamic/select.py):
    #   first_order:  this tool's estimate from the position and segment embeddings (needs absolute positions)
    #   mixture:      the reference code's: a mixture of the l+1 assembled input sequences weighted by the
    #                 straight-through one-hot (the forward is the hard choice), on any encoder
    #   mixture_soft: the same mixture weighted by the soft Gumbel-Softmax sample (the forward mixes)
    # default: the reference's (what the DP authors ran); first_order is cheaper but this tool's own
    estimator: Literal["first_order", "mixture", "mixture_soft"] = Field(
        "mixture", description="position gradient: mixture (the DP reference's: l+1 assembled sequences, hard forward; "
        "the default), mixture_soft (its soft forward), first_order (this tool's estimate from position/segment "
        "embeddings; one assembled sequence, absolute-position encoders only)"
    )
    length: Level = Field("none", description="learn the prompt length among `length_candidates` (masking unused slots)")
    length_candidates: Optional[list[int]] = Field(
        None, description="lengths to choose from, each in 1..prompt_length (default: l/4, l/2, 3l/4, l)"
    )
    pool_size: int = Field(1, ge=1, le=256, description="k prompt sets mixed per instance by softmax(Linear(pooled input)); 1 = one prompt")
    # instance-level selectors: 'linear' = this tool's zero-initialised Linear on the L2-normalised pooled
    # input (starts uniform); 'linear_relu' = the DP reference's MLP_pos, Linear + ReLU on the pooled input
    # (torch's default init), as in its soft_ins_pos_adaptive.py
    selector: Literal["linear", "linear_relu"] = Field(
        "linear", description="instance selector net: linear (zero-init Linear on the normalised pooled input) or "
        "linear_relu (the DP reference's Linear + ReLU, default init)"
    )
    tau0: float = Field(1.0, gt=0.0, description="Gumbel-Softmax temperature at the first step")
    tau_min: float = Field(0.1, gt=0.0, description="temperature at the last step (reference: the floor)")
    anneal: Literal["exponential", "linear", "cosine", "reference"] = Field(
        "exponential", description="temperature schedule tau0 -> tau_min over the run; reference: the DP code's "
        "tau_s = max(tau0 * exp(-anneal_rate * s(s+1)/2), tau_min) after s optimizer steps, whatever the run's length"
    )
    anneal_rate: float = Field(
        3e-6, gt=0.0, description="anneal: reference only: the rate per step squared (the reference's ANNEAL_RATE 3e-5 / aneal 10)"
    )
    # shallow only: 'vocab' = embeddings of random vocabulary tokens, 'vocab_first' = the first l rows of the
    # embedding table (OpenPrompt's SoftTemplate, the DP reference's), 'random' = N(0, 0.02^2)
    init: Literal["vocab", "vocab_first", "random"] = Field("vocab", description="shallow prompt init (ignored for deep)")
    # deep only (same meaning as PTuningV2Config; ignored for shallow)
    depth: Optional[Union[int, list[int]]] = Field(None, description="deep: None = every layer, k = top k, [i, ...] = those layers")
    reparameterize: bool = Field(False, description="deep: produce the prefixes with an MLP")
    prefix_hidden_size: int = Field(512, ge=1, description="deep: hidden width of the reparameterization MLP")
    prefix_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="deep: dropout on the prefix keys/values")
    init_std: float = Field(1.0, gt=0.0, description="deep: std of the initial prefixes (or of the reparameterization's input tokens; reference: 1.0)")

    # field validators (not a model validator) so that errors name the offending option;
    # each runs after the fields it reads, which are declared earlier
    @field_validator("position")
    @classmethod
    def _position_needs_shallow(cls, v: Optional[str], info: ValidationInfo) -> str:
        if v is None:
            return "none" if info.data.get("base") == "deep" else "instance"
        if v != "none" and info.data.get("base") == "deep":
            raise ValueError(
                f"position={v!r} needs base='shallow': deep prefixes are keys/values with no place in the "
                f"token sequence (use position='none' with base='deep')"
            )
        return v

    @field_validator("length_candidates")
    @classmethod
    def _candidates_in_range(cls, v: Optional[list[int]], info: ValidationInfo) -> Optional[list[int]]:
        l = info.data.get("prompt_length")
        if v is not None and l is not None:
            bad = [c for c in v if not 1 <= c <= l]
            if bad or not v:
                raise ValueError(f"length_candidates must be a non-empty list of lengths in 1..prompt_length={l} (bad: {bad or '[]'})")
        return v

    @field_validator("tau_min")
    @classmethod
    def _tau_min_below_tau0(cls, v: float, info: ValidationInfo) -> float:
        tau0 = info.data.get("tau0")
        if tau0 is not None and v > tau0:
            raise ValueError(f"tau_min={v} must not exceed tau0={tau0}")
        return v

    @model_validator(mode="after")
    def _something_dynamic(self) -> "DynamicConfig":
        """A config in which nothing is chosen per task or instance is plain prompt tuning
        (shallow) or P-Tuning v2 (deep): refuse it rather than report it as dynamic."""
        if self.position == "none" and self.length == "none" and self.pool_size == 1:
            plain = "prompt_tuning" if self.base == "shallow" else "ptuning_v2"
            hint = "position='task'|'instance', " if self.base == "shallow" else ""
            raise ValueError(
                f"nothing is dynamic (position='none', length='none', pool_size=1): set {hint}length='task'|'instance' "
                f"or pool_size > 1, or use method {plain!r}"
            )
        return self

    def family_problem(self, family: str, model_type: str) -> str | None:
        if family == "decoder" and self.position != "none":
            return (
                f"method 'dynamic': position={self.position!r} on the decoder family ({model_type}): placing the prompt "
                f"around the input is built for encoders and T5, not for decoder LMs yet; set position: none "
                f"(length and pool choices run)"
            )
        if family == "t5" and self.position != "none" and self.estimator == "first_order":
            return (
                f"method 'dynamic': estimator 'first_order' needs absolute position embeddings, and T5 ({model_type}) has "
                f"relative position buckets; use estimator: mixture (the default, the DP reference's)"
            )
        return None

    def candidate_lengths(self) -> list[int]:
        """The effective length candidates, ascending and distinct."""
        l = self.prompt_length
        cands = self.length_candidates if self.length_candidates is not None else [max(1, round(l * f)) for f in (0.25, 0.5, 0.75, 1.0)]
        return sorted(set(int(c) for c in cands))
