"""The rooms of ARCHITECTURE.md, kept by the source itself.

- an orchestrator room imports only the rooms below it (:data:`MAY_IMPORT`), at module level
  and inside functions alike, ``if TYPE_CHECKING:`` blocks included (a type is a dependency too);
- no orchestrator module imports another in a cycle, not even behind a function-local import;
- ptcore imports neither the orchestrator nor Ray nor MLflow;
- a function-local import of a project module says why, in a comment on its line (or the line
  above): startup time (torch, transformers, Ray, MLflow stay out of ``orchestrate --help``), a
  subprocess entry point, an optional dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import orchestrator
import ptcore
from importgraph import describe, find_cycle, import_graph, modules

ORCH = Path(orchestrator.__file__).resolve().parent
PTCORE = Path(ptcore.__file__).resolve().parent

# room -> the rooms it may import (besides itself and ptcore); ARCHITECTURE.md draws the same
MAY_IMPORT: dict[str, set[str]] = {
    "common": set(),
    "study": {"common"},
    "ledger": {"common", "study"},
    "tracking": {"common", "study", "ledger"},
    "execution": {"common", "study", "ledger", "tracking"},
    "report": {"common", "study", "ledger"},
    "bench": {"common", "study", "ledger", "tracking", "execution"},
    "cli": {"common", "study", "ledger", "tracking", "execution", "report", "bench"},
}
ROOT_MODULES = {"orchestrator", "orchestrator.__main__"}  # the package and `python -m orchestrator`


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "orchestrator" and parts[1] in MAY_IMPORT else None


def all_imports(path: Path, package: list[str]) -> list[tuple[str, int]]:
    """Every imported module name in a file (TYPE_CHECKING included), with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names] + [(target, node.lineno)]
    return out


def upward_imports(root: Path) -> list[str]:
    problems = []
    for name, path in modules(root).items():
        mine = room(name)
        if name in ROOT_MODULES:
            continue
        assert mine is not None, f"{path}: not in a room; put it in one of {sorted(MAY_IMPORT)} (ARCHITECTURE.md)"
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for target, line in all_imports(path, package):
            theirs = room(target)
            if theirs and theirs != mine and theirs not in MAY_IMPORT[mine]:
                problems.append(f"{path.relative_to(root.parent)}:{line}: the {mine} room imports {target} (room {theirs}, "
                                f"above it); move the shared piece down or pass it in")
    return sorted(set(problems))


def test_every_room_imports_only_rooms_below_it():
    problems = upward_imports(ORCH)
    assert not problems, "\n".join(problems)


def test_the_contract_catches_an_upward_import(tmp_path):
    """The checker itself: the ledger importing execution is refused, the reverse is fine."""
    pkg = tmp_path / "orchestrator"
    for d in ("ledger", "execution"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "execution" / "runner.py").write_text("from orchestrator.ledger import results\n")
    (pkg / "ledger" / "results.py").write_text("def f():\n    from ..execution import runner  # hidden in a function\n")
    problems = upward_imports(pkg)
    assert problems and all("ledger/results.py:2: the ledger room imports orchestrator.execution" in p for p in problems)


def test_orchestrator_imports_no_module_in_a_cycle():
    graph = import_graph(ORCH)
    cycle = find_cycle(graph)
    assert cycle is None, "orchestrator modules import each other in a cycle:\n" + describe(cycle, graph, modules(ORCH))


@pytest.mark.parametrize("forbidden", ["orchestrator", "ray", "mlflow"])
def test_ptcore_imports_no_orchestration(forbidden):
    hits = []
    for name, path in modules(PTCORE).items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        hits += [f"{path.relative_to(PTCORE.parent)}:{line}: {t}" for t, line in all_imports(path, package)
                 if t == forbidden or t.startswith(forbidden + ".")]
    assert not hits, f"ptcore must not import {forbidden}:\n" + "\n".join(sorted(set(hits)))


def local_imports_without_reason(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines), filename=str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                project = (isinstance(node, ast.ImportFrom) and node.level) or (mod or "").split(".")[0] in ("ptcore", "orchestrator")
                said = "#" in lines[node.end_lineno - 1] or "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                if project and not said:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)}")
    return sorted(set(out))


@pytest.mark.parametrize("root", [PTCORE, ORCH], ids=["ptcore", "orchestrator"])
def test_function_local_project_imports_say_why(root):
    missing = local_imports_without_reason(root)
    assert not missing, ("a function-local import of a project module without a comment saying why (move it to the "
                         "top, or say why on its line):\n" + "\n".join(missing))
