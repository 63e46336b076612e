"""Tuning methods, registered by name: each is a typed config plus an encoder module.

To add one, create ``ptcore/methods/<name>/`` with ``config.py`` (a
:class:`~ptcore.methods.config_base.MethodConfig`), ``model.py`` (a
:class:`~ptcore.methods.base.PromptEncoder`) and an ``__init__.py`` that calls
:func:`~ptcore.methods.registration.register_method` with its label, colour, marker, place
in the display order, FLOP plan and notes. Every sub-package of this folder is imported
below, so the folder is all there is to add (plus its notes in README "Departures from the
papers", which a test compares).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from pydantic import ValidationError

from ..errors import ConfigError
from .config_base import MethodConfig
from .registration import (
    METHODS, FlopPlan, FlopPlanFn, Method, display_order, get_method, register_method, unregister_method,
)  # fmt: skip

__all__ = [
    "METHODS", "FlopPlan", "FlopPlanFn", "Method", "MethodConfig", "display_order", "get_method", "make_method_config",
    "method_fields", "register_method", "unregister_method",
]  # fmt: skip

for _package in pkgutil.iter_modules(__path__):
    if _package.ispkg:  # ptcore/methods/<name>/: registers itself on import
        importlib.import_module(f"{__name__}.{_package.name}")


def method_fields(name: str) -> set[str]:
    return set(get_method(name).config_cls.model_fields)


def make_method_config(name: str, values: Mapping[str, Any]) -> MethodConfig:
    method = get_method(name)
    try:
        return method.config_cls(**dict(values))
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"]:  # a check across options (model validator): no single option to name
            raise ConfigError(f"method {name!r}: {err['msg'].removeprefix('Value error, ')}") from None
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"method {name!r} has no option {loc!r}; its options: {', '.join(sorted(method.config_cls.model_fields)) or '(none)'}"
            ) from None
        raise ConfigError(f"method {name!r} option {loc!r}: {err['msg']} (got {err.get('input')!r})") from None
