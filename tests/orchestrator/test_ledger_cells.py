"""One answer to "which final runs count for a cell" and "mean ± std over seeds", read by the
summary lines, the report and collect alike (orchestrator.ledger.cells)."""

from __future__ import annotations

import math

import pytest

from orchestrator.ledger.cells import cell_finals, seed_runs, seed_stats, study_finals
from orchestrator.ledger.summary import cell_summary
from orchestrator.report.regimes import RegimeCell
from orchestrator.report import stats


def _row(phase, seed=None, source=None, status="ok", val=None, cell="c1", trial="t"):
    return {"phase": phase, "seed": seed, "source_trial": source, "status": status, "val_primary": val,
            "test_primary": None, "cell": cell, "trial_id": trial, "dev_primary": 0.5 if phase == "search" else None}


# a resumed search selected trial t2 after seeds 0 and 1 had run from t1: the cell's finals are t2's
ROWS = [
    _row("search", trial="t1"), _row("search", trial="t2"),
    _row("final", 0, "t1", val=0.50), _row("final", 1, "t1", val=0.60),
    _row("final", 0, "t2", val=0.70), _row("final", 1, "t2", status="error"), _row("final", 1, "t2", val=0.80),
    _row("final", 0, "t2", val=0.99),  # a second ok run of seed 0 (a retry): the first counts
]


def test_cell_finals_are_the_latest_source():
    finals = cell_finals(ROWS)
    assert {r["source_trial"] for r in finals} == {"t2"} and len(finals) == 4
    assert [(r["seed"], r["val_primary"]) for r in seed_runs(finals)] == [(0, 0.70), (1, 0.80)]
    assert cell_finals([_row("search")]) == []


def test_study_finals_per_cell():
    other = [_row("final", 0, "fixed", val=0.4, cell="c2")]
    assert [r["cell"] for r in study_finals(ROWS + other)].count("c2") == 1
    assert all(r["source_trial"] == "t2" for r in study_finals(ROWS + other) if r["cell"] == "c1")


def test_seed_stats_sample_sd_and_none_for_one_seed():
    s = seed_stats([70.0, 80.0])
    assert (s.n, s.mean) == (2, 75.0) and s.std == pytest.approx(math.sqrt(50.0))
    assert seed_stats([70.0]).std is None and seed_stats([70.0]).mean == 70.0
    assert seed_stats([]) == seed_stats(())  # n 0, no mean
    assert stats.std([70.0]) is None and RegimeCell(values=[70.0]).std is None


def test_summary_reads_the_same_finals_and_stats():
    class Cell:
        id = "c1"

        class backbone:
            display = staticmethod(lambda: "b")

        task = "superglue/cb"

        class method:
            display = staticmethod(lambda: "m")
            search = True

    s = cell_summary(Cell, ROWS, target=2, seeds=[0, 1])
    assert s["val_mean"] == pytest.approx(0.75) and s["val_std"] == pytest.approx(seed_stats([0.7, 0.8]).std)
    one = cell_summary(Cell, ROWS[:3], target=2, seeds=[0])
    assert one["val_mean"] == pytest.approx(0.5) and one["val_std"] is None  # one seed: no spread, not 0.0
