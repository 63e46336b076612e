"""Which layers a deep method prompts (torch-free: the study checks depths before any model loads)."""

from __future__ import annotations

from ..errors import ConfigError


def resolve_layers(depth, num_layers: int) -> list[int]:
    """``None`` -> every layer; int k -> the top k layers; a list -> those layer indices."""
    if depth is None:
        return list(range(num_layers))
    if isinstance(depth, int):
        if not 1 <= depth <= num_layers:
            raise ConfigError(f"depth={depth} is out of range for a {num_layers}-layer backbone (1..{num_layers})")
        return list(range(num_layers - depth, num_layers))
    layers = sorted(set(int(i) for i in depth))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers:
        raise ConfigError(f"depth layers {bad or '[]'} are not valid layer indices 0..{num_layers - 1}")
    return layers
