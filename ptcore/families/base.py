"""What a backbone family is (:class:`Family`), and the masks the generative families share."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, Optional

if TYPE_CHECKING:  # torch is imported when a model is built
    import torch


class Family(abc.ABC):
    """A family of backbones that share their modeling code's shape.

    Lifecycle, as ptcore uses it:

    1. ``family_of(config)`` picks the family by ``config.model_type`` before any weights
       load (``ptcore.backbones.load_backbone``); :attr:`auto_class` names the transformers
       class the weights load into.
    2. A method's encoder (``ptcore.methods.base.PromptEncoder``) reads
       :meth:`prefix_sites` and :meth:`kv_dims` to size its per-layer prefixes, and
       :meth:`embeddings` for a soft prompt's width and initial vectors.
    3. For the generative families the encoder builds one :meth:`runner` around the backbone:
       it installs whatever hooks the family needs once, and runs every forward with the
       method's prompts (``soft_prompt``, ``prefix_kv``). The encoder family's methods run
       the backbone themselves (``PromptEncoder.encode``).
    4. The task kinds of a run's :attr:`formats` read the runner: hidden states for a head,
       log-likelihoods of label words for rank classification, greedy generation.
    """

    name: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    auto_class: ClassVar[str]  # transformers Auto class the weights load into
    formats: ClassVar[tuple[str, ...]]  # task formats it runs: "head" (a head on hidden states), "text"
    default_format: ClassVar[str]
    generative: ClassVar[bool]  # its runs go through a runner (text formats, decoders' heads)
    seq2seq: ClassVar[bool] = False  # an encoder reads the input, a decoder writes the target

    @abc.abstractmethod
    def prefix_sites(self, config) -> dict[str, int]:
        """Attention stacks that take per-layer key/value prefixes: site -> number of layers."""

    def kv_dims(self, config) -> tuple[int, int]:
        """(key/value heads, head dim) of one attention layer's keys."""
        heads = config.num_attention_heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return kv, head_dim

    def hidden_size(self, config) -> int:
        return config.hidden_size

    def num_layers(self, config) -> int:
        return config.num_hidden_layers

    def runner(self, encoder) -> "Runner":  # pragma: no cover - the encoder family has none
        raise NotImplementedError(f"the {self.name} family runs its methods' own forward")

    def truncate_layers(self, model, layers: int) -> None:  # pragma: no cover - per family
        raise NotImplementedError


class Runner(abc.ABC):
    """Runs a generative backbone with a method's prompts (see :class:`Family`, step 3)."""

    @abc.abstractmethod
    def hidden(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
        """(N,T) -> (N,T,H): final hidden states of the input tokens, prompts stripped."""

    @abc.abstractmethod
    def target_logprobs(self, batch: dict) -> "torch.Tensor":
        """Log-probability of every target token of a text batch: (M, Ttgt), 0 where no target."""

    @abc.abstractmethod
    def generate(self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor", max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding: the new token ids of each row, up to and without the end token."""


def take_greedy_step(next_ids: list[int], out: list[list[int]], done: list[bool], eos: set[int]) -> bool:
    """Append each unfinished row's next token to ``out``, or finish it at an end token (the end
    token is not kept). Returns whether every row is finished."""
    for i, t in enumerate(next_ids):
        if not done[i]:
            if t in eos:
                done[i] = True
            else:
                out[i].append(t)
    return all(done)


def additive(mask_bool: "torch.Tensor", dtype) -> "torch.Tensor":
    """A bool mask (True = attend) as the additive float mask every attention takes."""
    import torch

    return torch.zeros(mask_bool.shape, dtype=dtype, device=mask_bool.device).masked_fill_(~mask_bool, torch.finfo(dtype).min)


def causal_mask(key_mask: "torch.Tensor", q_len: int, prefix: int = 0, prefix_mask: Optional["torch.Tensor"] = None) -> "torch.Tensor":
    """The bool mask of a causal attention over ``prefix`` prefix columns then the keys.

    key_mask (N, Tk): 1 = a real key token; the queries are the last ``q_len`` of the Tk keys.
    prefix_mask (N, l) or None (every prefix slot visible). -> (N, 1, q_len, l + Tk)
    A query row that would see nothing (a left-pad query) sees its own column, so no row is
    all -inf (its output is never read).
    """
    import torch

    n, tk = key_mask.shape
    dev = key_mask.device
    q_pos = torch.arange(tk - q_len, tk, device=dev).unsqueeze(1)  # (q,1) absolute index of each query
    k_pos = torch.arange(tk, device=dev).unsqueeze(0)  # (1,Tk)
    allowed = (k_pos <= q_pos).unsqueeze(0) & key_mask.bool().unsqueeze(1)  # (N,q,Tk)
    allowed = allowed | (k_pos == q_pos).unsqueeze(0)  # a query always sees itself
    if prefix:
        pm = torch.ones(n, prefix, dtype=torch.bool, device=dev) if prefix_mask is None else prefix_mask.bool()
        allowed = torch.cat([pm.unsqueeze(1).expand(n, q_len, prefix), allowed], dim=2)
    return allowed.unsqueeze(1)
