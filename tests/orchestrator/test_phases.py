"""orchestrator.execution.phases: the order final runs start in (longest first, so no long run ends alone)."""

from __future__ import annotations

from orchestrator.execution.phases import Phases
from orchestrator.execution.recorder import Job
from orchestrator.study import compose_run, load_study

RAW = {
    "name": "order",
    "backbones": [{"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2, "label": "L2"}],
    "tasks": ["superglue/cb"],
    "methods": [
        {"name": "finetune", "search": {"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-4}}},
        {"name": "ptuning_v2", "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}},
    ],
    "train": {"epochs": 3},
    "budget": {"trials_per_cell": 3},
    "final": {"seeds": [0, 1, 2]},
}


class Rows:
    def __init__(self, rows):
        self.rows = rows

    def select(self, **where):
        return [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]


def test_finals_ordered_by_the_selected_configs_time_per_epoch():
    """Cell A's two ASHA-stopped trials (1 epoch, 10 s) pull its mean search wall time (26.7 s)
    below cell B's (45 s), yet A's selected configuration costs 20 s an epoch against B's 15:
    A's finals (3 epochs: 60 s a run) must start first."""
    ls = load_study(raw=RAW, output_dir="/tmp/unused-order")
    a, b = ls.cells()
    rows = [
        {"cell": a.id, "phase": "search", "trial_id": "a1", "wall_s": 10.0, "epochs_run": 1},
        {"cell": a.id, "phase": "search", "trial_id": "a2", "wall_s": 10.0, "epochs_run": 1},
        {"cell": a.id, "phase": "search", "trial_id": "a3", "wall_s": 60.0, "epochs_run": 3},
        {"cell": b.id, "phase": "search", "trial_id": "b1", "wall_s": 45.0, "epochs_run": 3},
    ]
    phases = Phases.__new__(Phases)
    phases.cells, phases.results = [a, b], Rows(rows)
    jobs = [
        Job(b, "run-b", [compose_run(ls, b, {"lr": 1e-3}, seed=s) for s in (0, 1, 2)], {"lr": 1e-3}, "b1"),
        Job(a, "run-a", [compose_run(ls, a, {"lr": 1e-5}, seed=s) for s in (0, 1, 2)], {"lr": 1e-5}, "a3"),
    ]
    ordered = phases._longest_first([[j] for j in jobs])
    assert [p[0].cell.id for p in ordered] == [a.id, b.id]
    # a selected trial with no row (resumed from elsewhere) falls back to the cell's mean per epoch
    jobs[1].source_trial = "gone"  # A: mean of 10, 10, 20 s an epoch = 13.3 < B's 15
    assert [p[0].cell.id for p in phases._longest_first([[j] for j in jobs])] == [b.id, a.id]
