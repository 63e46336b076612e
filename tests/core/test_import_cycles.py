"""No ptcore module imports another in a cycle, not even behind a function-local import.

The graph is read from the source (``ast``), not from a running interpreter: an edge for
every ``import`` / ``from ... import`` of a ptcore module, at module level and inside
functions alike (a function-local import only hides a cycle until the function runs).
Left out: imports under ``if TYPE_CHECKING:`` (they never run), and the implicit import of a
module's parent packages. ``from pkg import name`` is an edge to ``pkg.name`` where that is
a module, else to ``pkg``.
"""

from __future__ import annotations

from pathlib import Path

import ptcore
from importgraph import describe, find_cycle, import_graph, modules

ROOT = Path(ptcore.__file__).resolve().parent


def test_ptcore_imports_no_module_in_a_cycle():
    graph = import_graph(ROOT)
    cycle = find_cycle(graph)
    assert cycle is None, "ptcore modules import each other in a cycle:\n" + describe(cycle, graph, modules(ROOT))


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    """The checker itself: a cycle closed by a function-local import is found; one through a
    TYPE_CHECKING import is not a cycle."""
    pkg = tmp_path / "ptcore"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g  # hidden\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import X\n")
    (pkg / "d.py").write_text("from . import c\n")
    graph = import_graph(pkg)
    assert graph["ptcore.sub.b"] == {"ptcore.a": 2} and graph["ptcore.d"] == {"ptcore.c": 1} and graph["ptcore.c"] == {}
    assert find_cycle(graph) == ["ptcore.a", "ptcore.sub.b", "ptcore.a"]
