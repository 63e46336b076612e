"""A task model = a method's encoder (backbone + prompts) + a task head."""

from __future__ import annotations

import torch
import torch.nn as nn

from .methods.base import PromptEncoder
from .tasks.kinds import Kind

POOLINGS = ("mean", "cls", "pooler")


class TaskModel(nn.Module):
    def __init__(self, encoder: PromptEncoder, head: nn.Module, kind: Kind, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} not in {POOLINGS}")
        self.encoder = encoder
        self.head = head
        self.kind = kind
        self.pooling = pooling
        if pooling == "pooler" and getattr(encoder.backbone, "pooler", None) is None:
            from .errors import ConfigError

            raise ConfigError(
                f"pooling 'pooler': this backbone ({encoder.backbone.config.model_type}) has no pooler; use pooling mean or cls"
            )

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,T,H), (N,T) -> (N,H). 'mean' averages the real input tokens (they attend to the
        prompts, so prompts shape it); 'cls' takes position 0; 'pooler' adds the backbone's
        tanh pooler (frozen for prompt methods, as in P-Tuning v2)."""
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.pooling == "cls":
            return hidden[:, 0]
        return self.encoder.backbone.pooler(hidden)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.kind.logits(self, batch)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: prompts + head (everything, for fine-tuning)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t for n, t in self.state_dict().items() if n in names}

    def param_counts(self) -> tuple[int, int]:
        return count_params(self)


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; shared tensors counted once."""
    params = {id(p): p for p in module.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
