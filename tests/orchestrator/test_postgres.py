"""Studies on PostgreSQL: the MLflow tracking store and the Optuna storage each in a database
of their own on a PostgreSQL server (docs/cluster.md, 'PostgreSQL'), as a study that outgrows
one machine keeps them.

Every test gets fresh, uniquely named databases (``CREATE DATABASE`` on the test server,
dropped afterwards: :class:`orch_study_helpers.PgServer`) and skips, saying why, only where
no server answers at 127.0.0.1:5432 (or ``$PTCORE_TEST_POSTGRES``) or psycopg2 is missing.
The checks of what a study leaves behind are the ones the SQLite tests use
(``orch_study_helpers``): the same study, the same expectations, another backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from orch_study_helpers import (  # noqa: F401  (fixtures: tiny_bert, pg_server, pg_backend, pg_backend_module)
    SQLITE,
    assert_metrics_logged,
    assert_mlflow_complete,
    assert_optuna_complete,
    assert_results_complete,
    kill_points_scenario,
    kill_resume_scenario,
    mlflow_runs,
    pg_backend,
    pg_backend_module,
    pg_server,
    read_results,
    tiny_bert,
    write_study,
)
from orchestrator.cli.app import main
from orchestrator.tracking.tracker import experiment_owner


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------ a real study on PostgreSQL


@pytest.fixture(scope="module")
def finished(tiny_bert, pg_backend_module, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("pg")
    out = root / "out"
    path = write_study(root / "tiny.yaml", pg_backend_module.study(tiny_bert, out))
    cwd = os.getcwd()
    os.chdir(root)  # nothing is written to the working directory (the report goes to <output_dir>/report)
    try:
        t0 = time.time()
        rc = main(["study", str(path)])
        elapsed = time.time() - t0
    finally:
        os.chdir(cwd)
    assert rc == 0
    backend = pg_backend_module
    return {"path": path, "out": out, "root": root, "elapsed": elapsed, "backend": backend,
            "uri": backend.mlflow_uri(out), "optuna": backend.optuna_url(out)}


def test_study_on_postgresql(finished):
    """results.csv complete; every MLflow run FINISHED in the PostgreSQL store (1 study + 2
    cells + 8 runs) with the artifacts in the output directory; the cells' Optuna studies and
    their trials in the PostgreSQL storage; no SQLite store made beside them."""
    out = finished["out"]
    df = read_results(out)
    assert_results_complete(df, out)
    assert_mlflow_complete(finished["uri"], "tiny", df)
    runs = mlflow_runs(finished["uri"], "tiny")
    assert len(runs) == 11 and all(r.info.status == "FINISHED" for r in runs), {r.info.run_name: r.info.status for r in runs}
    assert_optuna_complete(finished["optuna"], "tiny", df)
    import optuna

    for s in optuna.get_all_study_summaries(finished["optuna"]):
        assert s.n_trials == 2
    assert not (out / "mlflow.db").exists() and not (out / "optuna.db").exists()
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=finished["uri"]).get_experiment_by_name("tiny")
    assert exp.artifact_location == (out / "mlartifacts").resolve().as_uri()  # not ./mlruns under the working directory
    assert exp.tags["ptcore.output_dir"] == str(out)  # whose experiment it is (a shared database)
    print(f"2-cell study on PostgreSQL: {finished['elapsed']:.1f} s")


def test_every_metric_value_in_postgresql(finished):
    """Two trials at a time logged their epochs through the driver into PostgreSQL: every
    value is there once (the check the SQLite study passes too, test_study_e2e.py)."""
    assert assert_metrics_logged(finished["uri"], "tiny", read_results(finished["out"])) > 0


def test_resume_of_done_study_runs_nothing(finished, capsys):
    before = (finished["out"] / "results.csv").read_text()
    cwd = os.getcwd()
    os.chdir(finished["root"])
    try:
        t0 = time.time()
        assert main(["study", str(finished["path"]), "--resume"]) == 0
        assert time.time() - t0 < 30  # no Ray start when nothing is left to do
    finally:
        os.chdir(cwd)
    assert "already done" in capsys.readouterr().out
    assert (finished["out"] / "results.csv").read_text() == before
    runs = mlflow_runs(finished["uri"], "tiny")
    assert len(runs) == 11 and all(r.info.status == "FINISHED" for r in runs)  # reused, not duplicated


def test_same_study_from_another_output_dir_is_refused(finished, tiny_bert, tmp_path, capsys, monkeypatch):  # noqa: F811
    """Two output directories of one study name on one database would share its experiment
    and Optuna studies (closing each other's runs on resume): the second is refused before
    anything starts, and renaming its experiment is not enough while its Optuna studies clash."""
    monkeypatch.chdir(tmp_path)  # were it not refused, its report would land in the working directory
    other = tmp_path / "other"
    path = write_study(tmp_path / "tiny.yaml", finished["backend"].study(tiny_bert, other))
    assert main(["study", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: tracking.experiment: MLflow experiment 'tiny'" in line and f"belongs to the study in {finished['out']}" in line
    assert "tracking.experiment" in line.split(";", 1)[1]  # the fix
    assert not other.exists()
    raw = finished["backend"].study(tiny_bert, other)
    raw["tracking"]["experiment"] = "tiny-2"
    path = write_study(tmp_path / "tiny2.yaml", raw)
    assert main(["study", str(path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{path}: name: the Optuna storage" in line and "holds study 'tiny/tiny__superglue-cb__ptuning_v2'" in line
    assert "rename this study" in line
    assert not other.exists()


def test_ui_serves_a_postgresql_store_from_here(pg_backend, tiny_bert, tmp_path, monkeypatch, capsys):  # noqa: F811
    """``orchestrate ui`` on a study tracked in PostgreSQL starts MLflow on that database (it
    used to say "open it there"), the port checked first; a password in the URL goes to
    MLflow in PGPASSWORD, not on its command line (where ps shows it)."""
    import socket

    from sqlalchemy.engine import make_url

    calls = []  # no real server here: test_ui_serves_the_postgresql_store runs one
    monkeypatch.setattr("orchestrator.cli.ui.run_process_tree", lambda c, **kw: calls.append((c, kw)) or (0, None))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    url = make_url(pg_backend.tracking["mlflow_uri"]).set(password="not-needed-with-trust")  # trust auth ignores it
    raw = pg_backend.study(tiny_bert, tmp_path / "out")
    raw["tracking"]["mlflow_uri"] = url.render_as_string(hide_password=False)
    path = write_study(tmp_path / "s.yaml", raw)
    assert main(["ui", str(path), "--port", port]) == 0
    (cmd, kw), = calls
    store = cmd[cmd.index("--backend-store-uri") + 1]
    assert store == url.set(drivername="postgresql+psycopg2")._replace(password=None).render_as_string(hide_password=False)
    assert kw["env"]["PGPASSWORD"] == "not-needed-with-trust" and "not-needed" not in " ".join(cmd)
    out = capsys.readouterr().out
    assert f"MLflow UI on http://127.0.0.1:{port}" in out and "postgresql" in out and "not-needed" not in out


@pytest.mark.slow  # MLflow's server takes 10-20 s to start on 2 cores
def test_ui_serves_the_postgresql_store(finished):
    """``orchestrate ui`` on a study tracked in PostgreSQL serves it from here (not "open it
    there"): the REST API lists the study's 11 runs; SIGTERM ends MLflow's whole tree."""
    import json
    import urllib.request

    from test_processes import describe, free_port, http_ok, kill_leftovers, leftovers, orchestrate, port_is_free, wait_for

    tag = f"pg-ui-{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "PTCORE_TEST_PROCESS_TAG": tag, "PYTHONUNBUFFERED": "1"}
    port = free_port()
    log_path = finished["root"] / "ui.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(orchestrate("ui", str(finished["path"]), "--port", str(port)), cwd=finished["root"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: http_ok(port) or proc.poll() is not None, 120), "the UI never answered"
        assert proc.poll() is None, log_path.read_text()[-2000:]
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=tiny", timeout=10) as r:
            exp = json.load(r)["experiment"]
        req = urllib.request.Request(f"{base}/runs/search", data=json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 100}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        assert len(runs) == 11
        assert "postgresql" in log_path.read_text()  # what it serves, password hidden
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-2000:]
        assert leftovers(tag) == [], describe(leftovers(tag))
        assert port_is_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_leftovers(tag)
        log.close()


# ------------------------------------------------------------------ preflight against the live server


@pytest.mark.parametrize(
    "tracking, where, fix",
    [
        ({"mlflow_uri": "{db}_missing"}, "tracking.mlflow_uri: the PostgreSQL server at 127.0.0.1:5432 has no database", "CREATE DATABASE"),
        ({"optuna_storage": "{db}_missing"}, "tracking.optuna_storage: the PostgreSQL server at 127.0.0.1:5432 has no database", "CREATE DATABASE"),
        ({"mlflow_uri": "postgresql://no_such_role_ptcore@127.0.0.1:5432/test"}, "tracking.mlflow_uri: the PostgreSQL server at 127.0.0.1:5432 refused user",
         "check the user and password"),
    ],
    ids=["mlflow-db-missing", "optuna-db-missing", "unknown-user"],
)
@pytest.mark.parametrize("command", ["validate", "study"])
def test_preflight_names_what_is_wrong(pg_backend, tiny_bert, tmp_path, capsys, monkeypatch, tracking, where, fix, command):  # noqa: F811
    """A server that answers but lacks the database (or the user): exit 2, one line with the
    field and the fix, before any output directory or Ray exists."""

    def tripwire(*args, **kwargs):
        raise AssertionError("a study was started")

    monkeypatch.setattr("orchestrator.execution.runner.run_study", tripwire)
    raw = pg_backend.study(tiny_bert, tmp_path / "out")
    for key, value in tracking.items():
        raw["tracking"][key] = value.replace("{db}", pg_backend.tracking[key])
    path = write_study(tmp_path / "s.yaml", raw)
    assert main([command, str(path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: {where}"), line
    assert fix in line
    assert not (tmp_path / "out").exists()
    import ray

    assert not ray.is_initialized()


# ------------------------------------------------------------------ kill -9 and resume on PostgreSQL


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """Each tracking backend in turn: the SQLite files, then fresh PostgreSQL databases."""
    return SQLITE if request.param == "sqlite" else request.getfixturevalue("pg_backend")


def test_resume_reconciles_what_a_kill_left(backend, tiny_bert, tmp_path):  # noqa: F811
    """What ``--resume`` does first (StudyRunner._run_locked), on each backend, without Ray:
    the MLflow runs a ``kill -9`` left RUNNING end FINISHED when results.csv holds their row,
    else KILLED; the Optuna trials it left RUNNING end COMPLETE with the row's dev score (the
    row was written, Tune had not told Optuna yet), else FAIL; finished ones stay as they were."""
    import optuna
    from optuna.trial import TrialState

    from orchestrator.ledger.outdir import OutputDir
    from orchestrator.study import load_study
    from orchestrator.tracking.tracker import KIND, RUN_INDEX, TRIAL, Tracker

    ls = load_study(write_study(tmp_path / "tiny.yaml", backend.study(tiny_bert, tmp_path / "out")))
    out = OutputDir(ls)
    uid = out.snapshot(False, print)
    cell = ls.cells()[0]
    # the first invocation: a study run, a finished trial "a", then kill -9 while "b" (its row
    # just written) and "c" (mid-way) ran
    storage = out.optuna_storage()
    out.claim_optuna(storage, ls.optuna_study_name(cell), uid)
    study = optuna.load_study(study_name=ls.optuna_study_name(cell), storage=storage)
    trials = {}
    for tid in "abc":
        trials[tid] = study.ask()
        trials[tid].set_user_attr("tune_trial_id", tid)
    study.tell(trials["a"], 0.5)
    results = out.results()
    for tid, dev in (("a", 0.5), ("b", 0.75)):
        results.add({"study": ls.name, "cell": cell.id, "phase": "search", "trial_id": tid, "run_index": 0, "status": "ok", "dev_primary": dev})
    tracker = Tracker(ls.mlflow_uri, ls.experiment_name, out.path / "mlartifacts", tags=out.owner(uid))
    runs = {tid: tracker._create(f"search-{tid}", {KIND: "run", TRIAL: tid, RUN_INDEX: "0"}) for tid in "abc"}
    tracker.end(runs["a"])
    study_run = tracker._create("tiny", {KIND: "study"})

    # the resume, as StudyRunner does it: whose stores these are, then MLflow, then Optuna
    out.check_owner(ls.cells(), experiment_owner)  # this output dir's own: no refusal
    resumed = OutputDir(ls).results()
    assert Tracker(ls.mlflow_uri, ls.experiment_name, out.path / "mlartifacts", tags=out.owner(uid)).close_stale(resumed.done_keys()) == 3
    out.reconcile_optuna(ls.cells(), resumed)

    status = {tid: tracker.client.get_run(run_id).info.status for tid, run_id in runs.items()}
    assert status == {"a": "FINISHED", "b": "FINISHED", "c": "KILLED"}
    assert tracker.client.get_run(study_run).info.status == "KILLED"
    got = {t.user_attrs["tune_trial_id"]: (t.state, t.value) for t in optuna.load_study(study_name=ls.optuna_study_name(cell), storage=backend.optuna_url(out.path)).trials}
    assert got == {"a": (TrialState.COMPLETE, 0.5), "b": (TrialState.COMPLETE, 0.75), "c": (TrialState.FAIL, None)}


@pytest.mark.slow
def test_kill9_mid_study_then_resume_on_postgresql(tiny_bert, tmp_path, pg_backend):  # noqa: F811
    """The SQLite scenario of test_study_resume.py, on PostgreSQL: resume reconciles the
    Optuna trials and MLflow runs a kill -9 left RUNNING in the database, runs no finished
    trial again, and ends with each run once in results.csv and once FINISHED in MLflow."""
    times = kill_resume_scenario(tiny_bert, tmp_path, pg_backend)
    print("kill -9 / resume on PostgreSQL:", ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


@pytest.mark.slow
def test_kill9_at_named_points_then_resume_on_postgresql(tiny_bert, tmp_path, pg_backend):  # noqa: F811
    """The named kill points of test_study_resume.py (search, final seeds, report), on PostgreSQL."""
    times = kill_points_scenario(tiny_bert, tmp_path, pg_backend)
    print("kill -9 at points / resume on PostgreSQL:", ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
