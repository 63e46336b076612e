"""``kill -9`` in the middle of a study, ``--resume``, Ctrl-C in the middle of that, and
``--resume`` again: finished trials are never re-run, the results table ends complete,
MLflow has no RUNNING run and no duplicate, Optuna learned from every finished trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from orch_study_helpers import mlflow_runs, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)

IDS = {"trial_id": str, "source_trial": str}  # ids like 01234567 stay strings


def _rows(path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _group_gone(pgid: int, timeout: float = 30.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
def test_kill9_mid_study_then_resume(tiny_bert, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tiny_bert, out))
    cmd = [sys.executable, "-m", "orchestrator", "study", str(path)]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    results = out / "results.csv"
    deadline = time.time() + 400
    try:
        while _rows(results) < 1:  # the first search trial has finished
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
        log.close()
    _group_gone(proc.pid)
    before = pd.read_csv(results, dtype=IDS)
    assert 1 <= len(before) < 8
    uri = f"sqlite:///{out / 'mlflow.db'}"
    assert any(r.info.status == "RUNNING" for r in mlflow_runs(uri, "tiny"))  # left behind by kill -9

    done = subprocess.run([*cmd], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 2 and "--resume" in done.stderr  # finished work: --resume is required

    # resume, then Ctrl-C (SIGINT to the whole process group, as a terminal does) mid-way:
    # a clean stop: exit 130, every open MLflow run ends KILLED
    log = open(tmp_path / "second.log", "w")
    proc = subprocess.Popen([*cmd, "--resume"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while _rows(results) < len(before) + 1:
            assert proc.poll() is None, (tmp_path / "second.log").read_text()[-3000:]
            assert time.time() < deadline + 400, "no trial finished in time"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    second = (tmp_path / "second.log").read_text()
    assert "closed" in second and "left RUNNING" in second  # the kill -9 leftovers were closed first
    assert "interrupted" in second
    _group_gone(proc.pid)
    assert not [r for r in mlflow_runs(uri, "tiny") if r.info.status == "RUNNING"]
    middle = pd.read_csv(results, dtype=IDS)

    done = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    after = pd.read_csv(results, dtype=IDS)
    assert len(after) == 8
    assert not after.duplicated(["trial_id", "run_index"]).any()
    # what had finished before each stop is still there, unchanged, and was not run again
    for earlier in (before, middle):
        kept = after.merge(earlier[["trial_id", "run_index", "dev_primary", "mlflow_run_id"]], on=["trial_id", "run_index"], suffixes=("", "_e"))
        assert len(kept) == len(earlier)
        assert (kept.mlflow_run_id == kept.mlflow_run_id_e).all() and (kept.dev_primary == kept.dev_primary_e).all()
    for _, g in after.groupby("cell"):
        assert (g.phase == "search").sum() == 2
        assert sorted(g[g.phase == "final"].seed) == [0, 1]

    runs = mlflow_runs(uri, "tiny")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.data.tags.get("ptcore.kind") == "run" and r.info.status == "FINISHED"]
    keys = [(r.data.tags["ptcore.trial_id"], r.data.tags["ptcore.run_index"]) for r in finished]
    assert len(keys) == len(set(keys)) == 8  # one FINISHED run per row: no duplicates
    assert {r.info.run_id for r in finished} == set(after.mlflow_run_id)
    killed = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get("ptcore.kind") == "run"]
    assert not {r.data.tags["ptcore.trial_id"] for r in killed} & set(after.trial_id[after.phase == "search"])
    assert len([r for r in runs if r.data.tags.get("ptcore.kind") == "study"]) == 1  # reused, not duplicated
    assert len([r for r in runs if r.data.tags.get("ptcore.kind") == "cell"]) == 2

    import optuna

    storage = f"sqlite:///{out / 'optuna.db'}"
    for s in optuna.get_all_study_summaries(storage):
        trials = optuna.load_study(study_name=s.study_name, storage=storage).trials
        assert optuna.trial.TrialState.RUNNING not in [t.state for t in trials]
        # every search row is a COMPLETE Optuna trial (TPE learns from it), including one
        # whose row was written just before the kill, before Tune could tell Optuna
        complete = {t.user_attrs.get("tune_trial_id") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        cell = s.study_name.split("/", 1)[1]
        assert set(after.trial_id[(after.cell == cell) & (after.phase == "search")]) <= complete
