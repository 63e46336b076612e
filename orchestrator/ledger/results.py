"""The study's tidy results table: ``<output_dir>/results.csv``, one row per search trial and
per final seed. Rewritten atomically (temp file + rename) after every finished run, so a
crash or ``kill -9`` never leaves half a file; it is also the ledger ``--resume`` reads to
know which trials and seeds are done.

Beside it, ``predictions/<cell>-<trial_id>-<run_index>.json`` holds each final run's per-item metric
inputs of its reported splits (``{"val": {"predictions", "references", "groups"}}``: the
arguments of the task's metric functions), which a report resamples for a paired bootstrap;
the row's ``predictions`` column names the file (relative to the output directory), and
``data_json`` records the run's data budget (split sizes, notes, max_length, epochs, ...).

``dev_curve`` is the run's dev score after each epoch (a JSON list): the selection of a search
cell (:func:`best_search_row`, :mod:`orchestrator.ledger.halving`) is computed from these curves, so it
is the same whatever order the trials reported in.

Statuses: ``ok`` (trained to the end; val/test reported), ``pruned`` (stopped early by
successive halving: dev only), ``error`` (the run failed; ``error`` says why).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from ptcore.fileio import atomic_write, write_json_atomic  # standard library only: reading the ledger needs no torch

from orchestrator.common import failpoints
from orchestrator.ledger.halving import select as halving_select

COLUMNS = [
    "study", "cell", "backbone", "model", "layers", "total_params", "task", "method", "method_label", "regime",
    "phase", "trial_id", "run_index", "seed", "status",
    "dev_primary", "val_primary", "test_primary", "primary_metric",
    "best_epoch", "epochs_run", "trainable_params", "trainable_pct", "checkpoint_bytes",
    "wall_s", "train_s", "train_examples", "workers", "sync_bytes_per_step", "precision",
    "params_json", "config_json", "config_hash", "source_trial", "data_json", "predictions", "dev_curve",
    "git_commit", "git_dirty", "node_id", "mlflow_run_id", "error", "finished_at",
]  # fmt: skip
NUMERIC = {
    "layers", "total_params", "run_index", "seed", "dev_primary", "val_primary", "test_primary", "best_epoch",
    "epochs_run", "trainable_params", "trainable_pct", "checkpoint_bytes", "wall_s", "train_s", "train_examples",
}  # fmt: skip
from orchestrator.ledger.statuses import ERROR, FINAL, OK, PRUNED, SEARCH, STATUSES  # noqa: F401  (read from here too)


def _num(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    if math.isnan(f):
        return None
    return int(f) if f.is_integer() and "." not in str(v) and "e" not in str(v).lower() else f


def is_metric_column(name: str) -> bool:
    return name.split("_", 1)[0] in ("dev", "val", "test") and name not in COLUMNS


class ResultsTable:
    """Rows in memory, the CSV on disk; ``add`` rewrites the file atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            import pandas as pd

            df = pd.read_csv(self.path, dtype=str, keep_default_na=False)
            for rec in df.to_dict(orient="records"):
                self.rows.append({k: (_num(v) if (k in NUMERIC or is_metric_column(k)) else (v if v != "" else None)) for k, v in rec.items()})

    # ------------------------------------------------------------ queries

    def done_keys(self) -> set[tuple[str, str]]:
        """(trial_id, run_index) of every recorded run (as strings, like the MLflow tags)."""
        return {(str(r["trial_id"]), str(r.get("run_index") or 0)) for r in self.rows}

    def select(self, **where: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]

    # ------------------------------------------------------------ writing

    def drop(self, **where: Any) -> int:
        """Remove matching rows (e.g. status=error before a retry); returns how many."""
        keep = [r for r in self.rows if not all(r.get(k) == v for k, v in where.items())]
        n = len(self.rows) - len(keep)
        if n:
            self.rows = keep
            self.write()
        return n

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()

    def columns(self) -> list[str]:
        extra = sorted({k for r in self.rows for k in r} - set(COLUMNS))
        order = {"val": 0, "test": 1, "dev": 2}
        extra.sort(key=lambda c: (order.get(c.split("_", 1)[0], 3), c))
        return COLUMNS + extra

    def write(self) -> None:
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=self.columns())
        failpoints.hit("ledger.write", str(self.path))
        with atomic_write(self.path, "w", newline="") as f:
            df.to_csv(f, index=False)


# ---------------------------------------------------------------- building rows


PREDICTIONS_DIR = "predictions"


def write_predictions(output_dir: Path, cell: str, trial_id: str, run_index: int, predictions: dict[str, Any]) -> str:
    """Store a run's per-item metric inputs; returns the path relative to ``output_dir``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cell}-{trial_id}-{run_index}")
    rel = f"{PREDICTIONS_DIR}/{name}.json"
    write_json_atomic(Path(output_dir) / rel, predictions, indent=None)
    return rel


def _split_metrics(prefix: str, scores: Optional[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (scores or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}_{k}"] = float(v)
    return out


def base_row(study: str, cell, phase: str, trial_id: str, run_index: int, seed: Optional[int]) -> dict[str, Any]:
    return {
        "study": study,
        "cell": cell.id,
        "backbone": cell.backbone.display(),
        "model": cell.model,
        "layers": cell.backbone.layers,
        "task": cell.task,
        "method": cell.method.name,
        "method_label": cell.method.display(),
        "regime": cell.regime_label,  # full / few_shot-32 / multitask (a study's regimes: labels)
        "phase": phase,
        "trial_id": trial_id,
        "run_index": run_index,
        "seed": seed,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def dev_curve(history: list[dict[str, Any]]) -> Optional[str]:
    """The per-epoch dev score of a run's history, as the ledger's ``dev_curve`` column (JSON)."""
    if not history:
        return None
    by_epoch = {int(r["epoch"]): r.get("dev_primary") for r in history if r.get("epoch") is not None}
    if not by_epoch:
        return None
    return json.dumps([by_epoch.get(e) for e in range(1, max(by_epoch) + 1)])


def row_from_result(row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Fill a row from ptcore's ``train()`` result record (status ok)."""
    git = result.get("git") or {}
    row.update(
        status=OK,
        layers=result.get("layers", row.get("layers")),
        total_params=result.get("total_params"),
        trainable_params=result.get("trainable_params"),
        trainable_pct=result.get("trainable_pct"),
        checkpoint_bytes=result.get("checkpoint_bytes"),
        dev_primary=(result.get("dev") or {}).get("primary"),
        val_primary=(result.get("val") or {}).get("primary"),
        test_primary=(result.get("test") or {}).get("primary"),
        primary_metric=result.get("primary_metric"),
        best_epoch=result.get("best_epoch"),
        epochs_run=result.get("epochs_run"),
        wall_s=result.get("wall_s"),
        train_s=result.get("train_s"),
        train_examples=result.get("train_examples"),
        data_json=json.dumps(result["data"], sort_keys=True) if result.get("data") else None,
        dev_curve=dev_curve(result.get("history") or []),
        config_json=json.dumps(result.get("config"), sort_keys=True),
        config_hash=result.get("config_hash"),
        git_commit=git.get("commit"),
        git_dirty=git.get("dirty"),
        workers=result.get("workers"),  # data-parallel processes (batch_size is the global batch)
        sync_bytes_per_step=result.get("sync_bytes_per_step"),
        precision=result.get("precision"),
    )
    for split in ("val", "test", "dev"):
        row.update({k: v for k, v in _split_metrics(split, result.get(split)).items() if k != f"{split}_primary"})
    return row


def row_from_history(row: dict[str, Any], history: list[dict[str, Any]], resolved: Optional[dict], config_hash: Optional[str], git: dict) -> dict[str, Any]:
    """Fill a row for a run that stopped before the end (pruned / error) from its epochs."""
    best = max(history, key=lambda r: r.get("dev_primary", -math.inf)) if history else None
    last = history[-1] if history else {}
    row.update(
        dev_primary=best.get("dev_primary") if best else None,
        best_epoch=best.get("epoch") if best else None,
        epochs_run=last.get("epoch"),
        total_params=last.get("total_params"),
        trainable_params=last.get("trainable_params"),
        trainable_pct=(100.0 * last["trainable_params"] / last["total_params"]) if last.get("total_params") else None,
        layers=last.get("layers", row.get("layers")),
        config_json=json.dumps(resolved, sort_keys=True) if resolved else None,
        config_hash=config_hash,
        dev_curve=dev_curve(history),
        git_commit=git.get("commit"),
        git_dirty=git.get("dirty"),
    )
    if best:
        row.update({k: v for k, v in best.items() if k.startswith("dev_") and k != "dev_primary" and isinstance(v, (int, float))})
    return row


def best_search_row(rows: Iterable[dict[str, Any]], halving: Optional[tuple[int, int, float]] = None) -> Optional[dict[str, Any]]:
    """Selection of one cell's search.

    ``halving`` = (epochs, grace_period, reduction_factor): where the rows carry their
    ``dev_curve``, the trial whose curve, read up to the rung where successive halving stops
    it, has the best dev score (:func:`orchestrator.ledger.halving.select`: independent of the order
    trials reported in). Otherwise (older ledgers, no halving): the highest dev_primary among
    runs that produced one (ties: earliest)."""
    rows = [r for r in rows if r.get("phase") == SEARCH]
    if halving is not None:

        usable = [r for r in rows if r.get("dev_curve")]
        if usable and len(usable) == len([r for r in rows if r.get("status") != ERROR]):
            return halving_select(rows, *halving)
    best = None
    for r in rows:
        if r.get("status") == ERROR or r.get("dev_primary") is None:
            continue
        if best is None or r["dev_primary"] > best["dev_primary"]:
            best = r
    return best
