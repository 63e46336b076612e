"""What every tuning method is: a typed config plus an *encoder* wrapping a backbone.

An encoder maps token ids to hidden states **aligned with the input tokens**:
``forward(input_ids (N,T), attention_mask (N,T), token_type_ids (N,T)) -> (N,T,H)``.
Whatever the method adds (soft prompt tokens, per-layer prefixes) is stripped before
the task head sees the sequence, so prompts never receive labels and never shift label
alignment or answer offsets: heads and tasks are shared by all methods.

On the encoder family (BERT-likes) a method runs the backbone itself (:meth:`encode`). On
the generative families (decoder LMs, T5; :mod:`ptcore.families`) it only owns its prompts
and hands them out: :meth:`soft_prompt` (vectors in front of the input) and
:meth:`prefix_kv` (per-layer keys/values for each attention site, :attr:`prefix_layers`);
the family's runner (:attr:`runner`) places them and runs the model, for a head
(:meth:`forward`), rank classification or generation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..backbones import Backbone
from ..families import Family, family_of
from .config_base import MethodConfig  # noqa: F401  (re-exported: the configs live without torch)


class PromptEncoder(nn.Module):
    """Base class: holds the backbone, freezes it unless the method trains it."""

    # attention site -> the layer indices it prompts (generative families; see the module doc)
    prefix_layers: dict[str, list[int]]

    def __init__(self, backbone: Backbone, config: MethodConfig):
        super().__init__()
        self.backbone = backbone.model
        self.config = config
        self.position_offset = backbone.position_offset
        self.family: Family = family_of(self.backbone.config)
        self.prefix_layers = {}
        self._runner = None
        if not config.trains_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    # ---- the generative families (decoder LMs, T5)

    @property
    def runner(self):
        """The family's runner around this encoder's backbone and prompts (built on first use,
        after the method has made its prompts)."""
        if self._runner is None:
            self._runner = self.family.runner(self)
        return self._runner

    def prepare(self, input_ids, attention_mask) -> None:
        """Called by the runner once per forward (generation: once), before the prompts are asked
        for: a method whose prompts depend on the input (dynamic prompting) chooses them here."""

    def soft_prompt(self, n: int):
        """(N, l, H) vectors in front of the (encoder) input, or None."""
        return None

    def soft_prompt_mask(self, n: int):
        """(N, l) 1 = the soft prompt's slot is used; None: every slot."""
        return None

    def place_soft_prompt(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A T5 encoder's input with the soft prompt placed: in front (Lester et al.), unless the
        method places it elsewhere (dynamic prompting's position). (N,T,H), (N,T) -> (N,s+T,H), (N,s+T)"""
        n = embeds.shape[0]
        soft = self.soft_prompt(n)  # (N,s,H) or None
        if soft is None:
            return embeds, attention_mask
        smask = self.soft_prompt_mask(n)  # (N,s) or None
        mask = torch.cat([attention_mask.new_ones(n, soft.shape[1]) if smask is None else smask.to(attention_mask.dtype),
                          attention_mask], dim=1)
        return torch.cat([soft.to(embeds.dtype), embeds], dim=1), mask

    def prefix_kv(self, n: int):
        """{site: (keys, values)}, each (N, len(prefix_layers[site]), kv_heads, l, head_dim); optionally
        "mask" (N, l), 1 = slot visible. None: no prefixes."""
        return None

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """(N,T) -> (N,T,H): hidden states of the input tokens, prompts stripped."""
        if self.family.generative:
            return self.runner.hidden(input_ids, attention_mask)
        return self.encode(input_ids, attention_mask, token_type_ids)

    # Input positions the method inserts into the token sequence (shallow prompts):
    # data encoding truncates inputs by this much so they still fit the position table.
    @property
    def extra_tokens(self) -> int:
        return 0

    @property
    def hidden_size(self) -> int:
        return self.family.hidden_size(self.backbone.config)

    def on_train_step(self, step: int, total_steps: int) -> dict[str, float]:
        """Called before every optimizer step; returns scalars to log (e.g. a temperature)."""
        return {}

    def token_types(self, token_type_ids, input_ids: torch.Tensor) -> torch.Tensor:
        """Segment ids, or zeros where the model has a single segment (RoBERTa) or none were given."""
        if token_type_ids is None or getattr(self.backbone.config, "type_vocab_size", 2) == 1:
            return torch.zeros_like(input_ids)
        return token_type_ids

    def position_ids(self, n: int, length: int, device: torch.device) -> torch.Tensor:
        """Positions 0..length-1 (plus RoBERTa's offset), never shifted by a prefix. (n, length)"""
        return (torch.arange(length, device=device) + self.position_offset).expand(n, length)

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:  # pragma: no cover
        """The encoder family's forward: the method runs the backbone itself. (N,T) -> (N,T,H)"""
        raise NotImplementedError
