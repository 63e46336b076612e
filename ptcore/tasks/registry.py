"""The task registry: every declared task by its ``<benchmark>/<task>`` name.

Task modules only *declare* specs (a module-level ``SPECS`` tuple); this module registers
them, so declarations never import the registry and there is no import cycle. To add a
benchmark, write a module with ``SPECS`` and list it in :data:`TASK_MODULES`.
"""

from __future__ import annotations

from types import ModuleType

from ..registry import Registry
from . import glue, ner, qa, superglue
from .base import TaskSpec

TASKS: Registry[TaskSpec] = Registry("task")
TASK_MODULES: tuple[ModuleType, ...] = (glue, superglue, ner, qa)

for _module in TASK_MODULES:
    for _spec in _module.SPECS:
        TASKS.register(_spec.name, _spec)


def get_task(name: str) -> TaskSpec:
    """The spec registered as ``name`` (case-insensitive); unknown names get a did-you-mean error."""
    return TASKS.get(name.strip().lower())
