"""The registry of backbone families (no torch)."""

from __future__ import annotations

from ..registry import Registry
from .base import Family

FAMILIES: Registry[type[Family]] = Registry("backbone family")


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: register a family under its ``name``."""
    return FAMILIES.register(cls.name, cls)
