"""Name -> object registries with "did you mean" errors (after lm-evaluation-harness)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import PtcoreError

T = TypeVar("T")


class UnknownNameError(PtcoreError, KeyError):
    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection. ``kind`` names what it holds, for error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a plugin unloading, a test restoring the registry); returns what it held."""
        if name not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def suggestions(self, name: str) -> list[str]:
        """Close names: those whose last part is ``name`` (``cb`` -> ``superglue/cb``), then
        spelling neighbours of the whole name or of its last part."""
        text = str(name).strip().lower()
        names = sorted(self._items)
        tail = {n: n.rsplit("/", 1)[-1].lower() for n in names}
        exact = [n for n in names if tail[n] == text.rsplit("/", 1)[-1]]
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
        by_tail = [n for t in difflib.get_close_matches(text.rsplit("/", 1)[-1], sorted(set(tail.values())), n=3, cutoff=0.6)
                   for n in names if tail[n] == t]
        return list(dict.fromkeys(exact + close + by_tail))[:4]

    def unknown_message(self, name: str) -> str:
        close = self.suggestions(name)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; available: {', '.join(sorted(self._items))}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
