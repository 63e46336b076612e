"""The import graph of a package, read from the source (``ast``), not from a running interpreter:
an edge for every ``import`` / ``from ... import`` of a module of the package, at module level
and inside functions alike (a function-local import only hides a cycle until the function runs).
Left out: imports under ``if TYPE_CHECKING:`` (they never run), and the implicit import of a
module's parent packages. ``from pkg import name`` is an edge to ``pkg.name`` where that is a
module, else to ``pkg``. Used by tests/core/test_import_cycles.py and tests/test_architecture.py.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module and package under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return skip


def imports_of(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The modules of the package ``name`` imports (module level and in functions) -> a line doing it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    skip = _type_checking_only(tree)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        for t in targets:
            while t and t not in known:  # `import pkg.x.y` of a name inside a module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.setdefault(t, node.lineno)
    return found


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, dict[str, int]]) -> Optional[list[str]]:
    """One cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]], known: dict[str, Path]) -> str:
    return "\n".join(f"  {a} imports {b} ({known[a]}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:]))
