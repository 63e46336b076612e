"""What every reader of the ledger agrees on: which final runs count for a cell, and their
statistics over seeds. The runner's summary lines, the MLflow cell metrics, the report's main,
regimes and contrasts tables, and ``orchestrate collect`` all read these two functions, so the
same rows give the same numbers everywhere.

- :func:`cell_finals`: a cell's final runs are those of the search trial its finals ran from
  (``source_trial``). A resumed search may select anew and run finals from another trial: the
  ledger is append-only, so the cell's finals are those of the source its *latest* final row
  names; earlier sources' rows stay in the ledger, unread.
- :func:`seed_runs`: one successful run per seed (the first in the ledger), in seed order.
- :func:`seed_stats`: n, mean and sample standard deviation (ddof 1; None for fewer than two
  seeds: one seed has no spread to show, and 0.0 would claim one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from orchestrator.ledger.results import FINAL, OK


def cell_finals(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final rows (any status) that count for ONE cell, given that cell's rows (any phase),
    in ledger order."""
    finals = [r for r in rows if r.get("phase") == FINAL]
    if not finals:
        return []
    source = finals[-1].get("source_trial")
    return [r for r in finals if r.get("source_trial") == source]


def study_finals(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`cell_finals` of every cell of a study's rows (grouped by the ``cell`` column), in ledger order."""
    rows = list(rows)
    by_cell: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault(r.get("cell"), []).append(r)
    keep = {id(r) for cell_rows in by_cell.values() for r in cell_finals(cell_rows)}
    return [r for r in rows if id(r) in keep]


def seed_runs(finals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ok final run per seed (the first the ledger has), ordered by seed."""
    out: dict[int, dict[str, Any]] = {}
    for r in finals:
        if r.get("status") == OK and r.get("seed") is not None and r["seed"] not in out:
            out[r["seed"]] = r
    return [out[s] for s in sorted(out)]


@dataclass(frozen=True)
class SeedStats:
    n: int
    mean: Optional[float]
    std: Optional[float]  # sample sd (ddof 1); None for n < 2


def seed_stats(values: Sequence[float]) -> SeedStats:
    xs = [float(v) for v in values]
    if not xs:
        return SeedStats(0, None, None)
    m = math.fsum(xs) / len(xs)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return SeedStats(len(xs), m, sd)
