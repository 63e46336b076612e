"""Successive halving that decides from a cell's dev scores alone: the same stops and the
same selection whatever order the trials report in (orchestrator.ledger.halving, and the Tune
scheduler over it, orchestrator.execution.search.CellHalving)."""

import itertools
import json
import random
from types import SimpleNamespace

import pytest

from orchestrator.ledger.halving import Halving, rungs, select
from orchestrator.ledger.results import best_search_row

# four trials of one cell, 3 epochs, rungs at epochs 1 and 2 (grace 1, η 2). "late" is the worst
# at epoch 1 and the best at epoch 3: halving stops it at the first rung, so a run in which it
# got to epoch 3 before the others reported epoch 1 must still not select it.
CURVES = {
    "a": [0.60, 0.70, 0.72],
    "b": [0.65, 0.66, 0.69],
    "c": [0.62, 0.71, 0.70],
    "late": [0.40, 0.50, 0.95],
}
PARAMS = {t: json.dumps({"lr": i / 10}, sort_keys=True) for i, t in enumerate(CURVES)}


def test_rungs():
    assert rungs(3, 1, 2) == [1, 2]
    assert rungs(10, 1, 3) == [1, 3, 9]
    assert rungs(1, 1, 2) == []
    assert rungs(8, 2, 1.5) == [2, 3, 5, 7]


def _interleavings(n: int, seed: int):
    """``n`` random orders in which the trials' epoch reports can arrive (each trial's own epochs in order)."""
    rng = random.Random(seed)
    for _ in range(n):
        left = {t: 1 for t in CURVES}
        order = []
        while left:
            t = rng.choice(sorted(left))
            order.append((t, left[t]))
            left[t] += 1
            if left[t] > len(CURVES[t]):
                del left[t]
        yield order


def _run(order, scheduler):
    """Feed the reports through a Tune scheduler as Tune would; the ledger rows it leaves."""
    from ray.tune.schedulers import TrialScheduler

    from orchestrator.execution.search import CELL_KEY

    trials = {t: SimpleNamespace(trial_id=t, config={CELL_KEY: 0, "lr": json.loads(PARAMS[t])["lr"]}) for t in CURVES}
    for tr in trials.values():
        scheduler.on_trial_add(None, tr)
    seen = {t: [] for t in CURVES}
    stopped = set()
    for t, epoch in order:
        if t in stopped:
            continue
        seen[t].append(CURVES[t][epoch - 1])
        if scheduler.on_trial_result(None, trials[t], {"epoch": epoch, "dev_primary": CURVES[t][epoch - 1]}) == TrialScheduler.STOP:
            stopped.add(t)
    rows = []
    for t in CURVES:
        rows.append({"phase": "search", "trial_id": t, "status": "pruned" if t in stopped else "ok",
                     "dev_primary": max(seen[t]), "dev_curve": json.dumps(seen[t]), "params_json": PARAMS[t]})
    return rows, stopped


def test_same_selection_and_stops_in_every_order():
    pytest.importorskip("ray.tune")
    from orchestrator.execution.search import CellHalving

    selected, truly_stopped = set(), set()
    for order in _interleavings(60, seed=1):
        h = Halving(n=4, milestones=rungs(3, 1, 2), reduction_factor=2)
        rows, stopped = _run(order, CellHalving({0: h}))
        best = best_search_row(rows, (3, 1, 2))
        selected.add(best["trial_id"])
        # what halving decides, read from the ledger, is the same in every order
        offline = Halving(n=4, milestones=rungs(3, 1, 2), reduction_factor=2)
        for r in rows:
            for e, v in enumerate(json.loads(r["dev_curve"]), start=1):
                offline.add(r["trial_id"], e, v, tiebreak=r["params_json"])
        truly_stopped.add(tuple(sorted((t, s) for t, s in offline.decide().items() if s is not None)))
        assert stopped <= {t for t, s in offline.decide().items() if s is not None}  # online stops only what halving stops
    # epoch 1 keeps b and c (a and late out), epoch 2 keeps c: c's 0.71 is selected, never
    # late's 0.95 (after its stop) nor a's 0.72 (after its stop)
    assert selected == {"c"}
    assert truly_stopped == {(("a", 1), ("b", 2), ("late", 1))}


def test_asha_selection_depends_on_order():
    """Why: the same reports in other orders make Ray's ASHA select differently."""
    pytest.importorskip("ray.tune")
    from ray.tune.schedulers import ASHAScheduler

    from orchestrator.execution.search import CellASHA

    selected = set()
    for order in _interleavings(60, seed=1):
        asha = ASHAScheduler(time_attr="epoch", metric="dev_primary", mode="max", max_t=4, grace_period=1, reduction_factor=2)
        rows, _ = _run(order, CellASHA({0: asha}))
        selected.add(best_search_row(rows)["trial_id"])
    assert len(selected) > 1


def test_ties_are_broken_by_configuration_not_arrival():
    rows_ab = [
        {"phase": "search", "trial_id": "x", "status": "ok", "dev_primary": 0.5, "dev_curve": "[0.5, 0.5]", "params_json": '{"lr": 0.2}'},
        {"phase": "search", "trial_id": "y", "status": "ok", "dev_primary": 0.5, "dev_curve": "[0.5, 0.5]", "params_json": '{"lr": 0.1}'},
    ]
    assert select(rows_ab, 2, 1, 2)["trial_id"] == "y"
    assert select(list(reversed(rows_ab)), 2, 1, 2)["trial_id"] == "y"


def test_errors_lose_their_rungs_and_are_never_selected():
    rows = [
        {"phase": "search", "trial_id": "ok", "status": "ok", "dev_curve": "[0.5, 0.6, 0.6]", "params_json": "{}"},
        {"phase": "search", "trial_id": "bad", "status": "error", "dev_curve": "[0.9]", "params_json": '{"lr": 1}'},
    ]
    assert select(rows, 3, 1, 2)["trial_id"] == "ok"


def test_incomplete_rung_stops_only_the_certain():
    h = Halving(n=4, milestones=[1, 2], reduction_factor=2)
    for t, s in (("a", 0.9), ("b", 0.8), ("c", 0.1)):
        h.add(t, 1, s)
    # keep 2 of 4 at epoch 1: c is beaten by a and b whatever the fourth trial scores
    assert h.decide() == {"a": None, "b": None, "c": 1}
    h.add("d", 1, 0.85)
    assert h.decide()["b"] == 1 and h.decide()["a"] is None and h.decide()["d"] is None


def test_ledger_without_curves_falls_back():
    rows = [{"phase": "search", "trial_id": "1", "status": "ok", "dev_primary": 0.4},
            {"phase": "search", "trial_id": "2", "status": "pruned", "dev_primary": 0.6}]
    assert best_search_row(rows, (3, 1, 2))["trial_id"] == "2"
    assert list(itertools.islice(_interleavings(1, 0), 1))
