"""A module imported on its first attribute access.

For code whose *classes* must load without torch while their *methods* use it: a task
kind's facts (its name, whether it has a label set, how it truncates) are read by
``orchestrate ls``, task declarations and the report, none of which loads torch; its
``collate``, ``loss`` and head do. ``torch = LazyModule("torch")`` at the top of such a
module keeps the code reading as usual (``torch.tensor``, ``F.cross_entropy``) and imports
torch the first time a method touches it (``sys.modules`` holds it only from then on).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Optional


class LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module: Optional[ModuleType] = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{'' if self._module is None else ' (imported)'}>"
