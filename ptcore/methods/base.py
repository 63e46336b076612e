"""What every tuning method is: a typed config plus an *encoder* wrapping a backbone.

An encoder maps token ids to hidden states **aligned with the input tokens**:
``forward(input_ids (N,T), attention_mask (N,T), token_type_ids (N,T)) -> (N,T,H)``.
Whatever the method adds (soft prompt tokens, per-layer prefixes) is stripped before
the task head sees the sequence, so prompts never receive labels and never shift label
alignment or answer offsets: heads and tasks are shared by all methods.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from ..backbones import Backbone
from .config_base import MethodConfig  # noqa: F401  (re-exported: the configs live without torch)


class PromptEncoder(nn.Module):
    """Base class: holds the backbone, freezes it unless the method trains it."""

    def __init__(self, backbone: Backbone, config: MethodConfig):
        super().__init__()
        self.backbone = backbone.model
        self.config = config
        self.position_offset = backbone.position_offset
        if not config.trains_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)

    # Input positions the method inserts into the token sequence (shallow prompts):
    # data encoding truncates inputs by this much so they still fit the position table.
    @property
    def extra_tokens(self) -> int:
        return 0

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

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

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
