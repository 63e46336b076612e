"""What a cell's rows of ``results.csv`` say: its summary (search counts, the selected
search trial, the final seeds' val/test mean and std, done or not) and the lines that
announce it (progress) and the metrics its MLflow cell run gets.

The summary is computed from the rows alone, so the same numbers come out whether a cell
finished in this invocation or in an earlier one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from orchestrator.ledger import results as R
from orchestrator.ledger.cells import cell_finals, seed_runs, seed_stats
from orchestrator.ledger.results import ERROR, OK, PRUNED, SEARCH

if TYPE_CHECKING:
    from orchestrator.study import Cell


def _params_str(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "-"


def R_fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def cell_summary(cell: Cell, rows: list[dict[str, Any]], target: int, seeds: list[int],
                 halving: Optional[tuple[int, int, float]] = None) -> dict[str, Any]:
    search = [r for r in rows if r["phase"] == SEARCH]
    best = R.best_search_row(rows, halving)
    finals = cell_finals(rows)
    ok = [r for r in finals if r["status"] == OK]
    val = seed_stats([r["val_primary"] for r in seed_runs(finals) if r.get("val_primary") is not None])
    test = seed_stats([r["test_primary"] for r in seed_runs(finals) if r.get("test_primary") is not None])
    params = json.loads(best["params_json"]) if best and best.get("params_json") else {}
    return {
        "cell": cell.id,
        "backbone": cell.backbone.display(),
        "task": cell.task,
        "method": cell.method.display(),
        "search": f"{sum(r['status'] == OK for r in search)}/{sum(r['status'] == PRUNED for r in search)}/{sum(r['status'] == ERROR for r in search)}",
        "best_dev": best["dev_primary"] if best else None,
        "best_params": _params_str(params),
        "final_ok": len(ok),
        "val_mean": val.mean,
        "val_std": val.std,
        "test_mean": test.mean,
        "trainable_pct": ok[0].get("trainable_pct") if ok else None,
        "done": len(search) >= target and len({int(r["seed"]) for r in finals}) >= len(seeds) and len(ok) == len(finals),
    }


def summary_metrics(summ: dict[str, Any]) -> dict[str, Any]:
    """The summary's numbers logged on the cell's MLflow run when the cell finishes: the
    selected trial's dev score, the final seeds' val (mean, std) and test (mean) scores, how
    many final runs ended ok, and the share of trainable weights."""
    keys = ("best_dev", "val_mean", "val_std", "test_mean", "final_ok", "trainable_pct")
    return {k: summ[k] for k in keys if summ.get(k) is not None}


def selection_line(best: Optional[dict[str, Any]], params: dict) -> str:
    """The line that ends a cell's search: its selected trial's dev score and values."""
    return f"best dev {R_fmt(best['dev_primary'])} ({_params_str(params)})" if best else "no trial produced a dev score"


def done_line(cell: Cell, summ: dict[str, Any]) -> str:
    """The line that announces a finished cell: its selection and its final seeds."""
    return (
        (f"best dev {R_fmt(summ['best_dev'])} ({summ['best_params']})" if cell.method.search else "fixed configuration (no search)")
        + f"; final val {R_fmt(summ['val_mean'])}"
        f" ± {R_fmt(summ['val_std'])} over {summ['final_ok']} seed(s)" + ("" if summ["done"] else " [INCOMPLETE]")
    )
