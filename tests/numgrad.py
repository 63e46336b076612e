"""Central finite differences, for tests that check a gradient against the loss itself."""

from __future__ import annotations

from typing import Callable

import torch


def central_differences(loss: Callable[[], torch.Tensor], tensor: torch.Tensor, eps: float) -> torch.Tensor:
    """d loss / d ``tensor``, element by element: ``(loss(x + eps) - loss(x - eps)) / (2 eps)``,
    ``tensor`` shifted in place and restored; ``loss`` runs in the caller's grad mode."""
    flat = tensor.detach().view(-1)  # the same storage: the shifts reach what ``loss`` reads
    numeric = torch.zeros_like(flat)
    for k in range(flat.numel()):
        flat[k] += eps
        up = loss().item()
        flat[k] -= 2 * eps
        down = loss().item()
        flat[k] += eps
        numeric[k] = (up - down) / (2 * eps)
    return numeric.view_as(tensor)
