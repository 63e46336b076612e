"""What a tuning method registers about itself, and the registry that holds it (no torch).

Each method's ``__init__.py`` calls :func:`register_method` once, as huggingface/peft's
``tuners/<name>/__init__.py`` calls ``register_peft_method``: its name, its typed options,
its encoder, and everything the rest of the tool reads about it. Nothing outside the
method's folder lists methods:

* ``ptcore`` (config, train) reads ``config`` and ``encoder``;
* ``orchestrate ls methods`` and the CLI's help list the registered names, labels and
  descriptions;
* the report (``orchestrator/common/labels.py``) reads ``label``, ``color``, ``marker`` and
  ``order``; its method notes and the README's "Departures from the papers" read ``notes``;
* the bench (``orchestrator/bench/flops.py``) reads ``flops``: the :class:`FlopPlan` of
  the method's options;
* ``ptcore.model.check_run`` and the study's validation read ``families``: the backbone
  families (:mod:`ptcore.families`) it runs on.

A method outside ptcore registers itself the same way (``from ptcore.methods import
register_method``), once its package is imported.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

from ..registry import Registry
from .config_base import MethodConfig


@dataclass(frozen=True)
class FlopPlan:
    """What a method makes the encoder do, as far as the bench's FLOP count goes (the
    counting convention: ``orchestrator/bench/flops.py``)."""

    extra_tokens: int = 0  # shallow prompt positions added to every sequence
    prefix: int = 0  # prefix key/value slots at each layer in prefix_layers
    prefix_layers: tuple[int, ...] = ()
    trains_weights: bool = False  # backbone matrices get weight gradients (fine-tuning)
    lowest_grad_layer: Optional[int] = 0  # lowest layer the gradient reaches; None: no backward through the encoder
    input_grad_at_lowest: bool = True  # False: the lowest layer's input needs no gradient (deep prefix)
    extra_forward_pass: bool = False  # one more no-grad forward over the unprompted input (dynamic, instance level)


# (the method's options, defaults filled in where the caller has them; the encoder's layer count) -> its plan
FlopPlanFn = Callable[[Mapping[str, Any], int], FlopPlan]


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    # its PromptEncoder: a class, or "package.module:Class" imported on first use (names and
    # options then need no torch)
    encoder: Union[str, type]
    description: str  # one line: what it trains
    label: str  # how reports, tables and plots name it ("P-Tuning v2")
    color: Optional[str] = None  # plot colour; None: a stable hash of the name picks one
    marker: Optional[str] = None  # matplotlib marker; None: a stable hash of the name picks one
    order: float = math.inf  # its place in tables and legends (ascending; ties by name)
    flops: Optional[FlopPlanFn] = None  # its FlopPlan for the bench's MFU; None: the bench cannot count it
    # how this implementation departs from (or fills gaps in) the method's paper and reference
    # code: README "Departures from the papers" and every report's method notes print these
    notes: tuple[str, ...] = ()
    # the backbone families (ptcore.families) it runs on
    families: tuple[str, ...] = ("encoder", "decoder", "t5")

    @property
    def encoder_cls(self):
        """The method's :class:`~ptcore.methods.base.PromptEncoder` (imports torch)."""
        if not isinstance(self.encoder, str):
            return self.encoder
        module, _, cls = self.encoder.partition(":")
        return getattr(importlib.import_module(module), cls)

    def flop_plan(self, options: Mapping[str, Any], layers: int) -> FlopPlan:
        """The encoder work of one training step with ``options`` on a ``layers``-layer encoder."""
        if self.flops is None:
            raise ValueError(f"method {self.name!r} registers no FLOP plan (register_method(..., flops=...))")
        return self.flops(dict(options or {}), layers)


METHODS: Registry[Method] = Registry("method")


def register_method(
    name: str,
    *,
    config: type[MethodConfig],
    encoder: Union[str, type],
    description: str,
    label: Optional[str] = None,
    color: Optional[str] = None,
    marker: Optional[str] = None,
    order: float = math.inf,
    flops: Optional[FlopPlanFn] = None,
    notes: tuple[str, ...] = (),
    families: tuple[str, ...] = ("encoder", "decoder", "t5"),
) -> Method:
    """Register a method (see :class:`Method` for each field); a name registered twice is an error."""
    if not (isinstance(config, type) and issubclass(config, MethodConfig)):
        raise TypeError(f"method {name!r}: config must be a MethodConfig subclass (got {config!r})")
    method = Method(name, config, encoder, description, label or name, color, marker, float(order), flops, tuple(notes),
                    tuple(families))
    return METHODS.register(name, method)


def unregister_method(name: str) -> Method:
    """Remove a registered method (a plugin unloading, a test restoring the registry)."""
    return METHODS.unregister(name)


def get_method(name: str) -> Method:
    """The registered method; an unknown name gets a did-you-mean error."""
    return METHODS.get(name)


def method_family_problem(name: str, family: str, model_type: str = "") -> str | None:
    """Why method ``name`` cannot run on a backbone of ``family``, in one line, or None."""
    method = get_method(name)
    if family in method.families:
        return None
    what = f"a {model_type!r} model of the {family} family" if model_type else f"a {family} backbone"
    others = [m for m, meth in METHODS.items() if family in meth.families]
    return (f"method {name!r} runs on the {', '.join(method.families)} famil{'y' if len(method.families) == 1 else 'ies'} only; "
            f"this backbone is {what}: use {' or '.join(others)}")


def display_order() -> tuple[str, ...]:
    """Every registered method's name, in the order tables and legends list them."""
    return tuple(name for name, _ in sorted(METHODS.items(), key=lambda kv: (kv[1].order, kv[0])))
