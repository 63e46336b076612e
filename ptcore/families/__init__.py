"""Backbone families: which checkpoints ptcore runs and how prompts enter each of them.

A family (:class:`~ptcore.families.base.Family`) registers itself by name with the
``model_type`` values of the configs it takes (:func:`register_family`). Three ship here:

=========  ==========================================  ==================  =================
family     model types                                 formats             prompts enter
=========  ==========================================  ==================  =================
encoder    bert, roberta, xlm-roberta, electra,        head                input embeddings;
           camembert, deberta-v2                                           self-attention KV
decoder    gpt2, llama, mistral, qwen2, qwen3, gemma   text (default),     input embeddings;
                                                       head                self-attention KV
t5         t5, mt5                                     text                encoder input;
                                                                           encoder, decoder and
                                                                           cross-attention KV
=========  ==========================================  ==================  =================

:func:`family_of` answers for a config; an unsupported ``model_type`` gets one line naming
the supported ones. The families' modules import torch only when a model is built.
"""

from __future__ import annotations

from typing import Optional

import importlib

from .base import Family
from .registry import FAMILIES, register_family

BUILTIN = ("encoder", "decoder", "t5")  # modules of this package that register a family


def _load_builtin() -> None:
    """Import the built-in families (each registers itself); the decoder and T5 modules import
    torch, so they load when a family is first asked for, not with the package."""
    for name in BUILTIN:
        importlib.import_module(f"{__name__}.{name}")


def model_types() -> dict[str, str]:
    """``model_type`` -> the family that runs it."""
    _load_builtin()
    return {mt: name for name, cls in FAMILIES.items() for mt in cls.model_types}


def supported_line() -> str:
    """The supported model types, by family, in one line."""
    _load_builtin()
    return "; ".join(f"{name}: {', '.join(cls.model_types)}" for name, cls in FAMILIES.items())


def family_name(config) -> Optional[str]:
    """The name of the family that runs ``config`` (a transformers config), or None."""
    return model_types().get(getattr(config, "model_type", None))


def family_of(config) -> Family:
    """The family instance for ``config``; ``ValueError`` (one line, the supported families) otherwise."""
    name = family_name(config)
    if name is None:
        raise ValueError(f"is a {getattr(config, 'model_type', None)!r} model; supported families: {supported_line()} (see README, 'Backbones')")
    return FAMILIES.get(name)()


__all__ = ["FAMILIES", "Family", "family_name", "family_of", "model_types", "register_family", "supported_line"]
