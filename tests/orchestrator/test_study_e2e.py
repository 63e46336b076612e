"""A real 2-cell study end to end: local Ray (Tune + Train V2), Optuna, MLflow on SQLite,
a tiny random BERT on disk and the SuperGLUE fixtures. One study run for the module;
the tests read what it left behind."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time

import pandas as pd
import pytest

from orch_study_helpers import (  # noqa: F401  (tiny_bert: fixture)
    IDS,
    assert_metrics_logged,
    assert_mlflow_complete,
    assert_mlflow_layout,
    assert_optuna_complete,
    assert_results_complete,
    mlflow_runs,
    read_results,
    tiny_bert,
    tiny_study,
    write_study,
)
from orchestrator.cli.app import main


DESCRIPTION = "CB and RTE x P-Tuning v2 on a tiny random BERT"


@pytest.fixture(scope="module")
def finished(tiny_bert, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("e2e")
    out = root / "out"
    path = write_study(root / "tiny.yaml", tiny_study(tiny_bert, out, description=DESCRIPTION))
    import os

    cwd = os.getcwd()
    os.chdir(root)  # nothing is written to the working directory (the report goes to <output_dir>/report)
    try:
        t0 = time.time()
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            rc = main(["study", str(path)])
        elapsed = time.time() - t0
    finally:
        os.chdir(cwd)
    print(stdout.getvalue())
    assert rc == 0
    return {"path": path, "out": out, "root": root, "elapsed": elapsed, "stdout": stdout.getvalue()}


def test_results_table(finished):
    df = pd.read_csv(finished["out"] / "results.csv", dtype=IDS)
    required = [
        "study", "cell", "backbone", "layers", "total_params", "task", "method", "phase", "trial_id", "seed", "status",
        "dev_primary", "val_primary", "test_primary", "best_epoch", "epochs_run", "trainable_params", "trainable_pct",
        "checkpoint_bytes", "wall_s", "train_s", "config_json", "config_hash", "git_commit", "val_accuracy",
    ]  # fmt: skip
    assert set(required) <= set(df.columns)
    assert "val_macro_f1" in df.columns  # CB's second metric
    assert_results_complete(df, finished["out"])  # shared with the PostgreSQL study (test_postgres.py)
    assert not list(finished["out"].glob(".results.csv.*"))  # atomic writes leave no temp files


def test_mlflow_hierarchy(finished):
    uri = f"sqlite:///{finished['out'] / 'mlflow.db'}"
    df = read_results(finished["out"])
    assert_mlflow_complete(uri, "tiny", df)  # shared with the PostgreSQL study (test_postgres.py)
    runs = mlflow_runs(uri, "tiny")
    assert len(runs) == 11 and all(r.info.status == "FINISHED" for r in runs), {r.info.run_name: r.info.status for r in runs}


def test_mlflow_layout(finished):
    """Run names task first, the filter tags on every run, the cells' selection as params and
    summary as metrics, constants as params, lr_schedule, the experiment's description and kind."""
    assert_mlflow_layout(f"sqlite:///{finished['out'] / 'mlflow.db'}", "tiny", DESCRIPTION)


def test_every_metric_value_in_the_store(finished):
    """Two trials at a time logged their epochs through the driver: the store holds every
    value once (the same check runs on PostgreSQL, test_postgres.py)."""
    n = assert_metrics_logged(f"sqlite:///{finished['out'] / 'mlflow.db'}", "tiny", read_results(finished["out"]))
    assert n > 0


def test_optuna_storage_and_state(finished):
    import optuna

    storage = f"sqlite:///{finished['out'] / 'optuna.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"tiny/tiny__superglue-cb__ptuning_v2", "tiny/tiny__superglue-rte__ptuning_v2"}
    for name in names:
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 2
    assert_optuna_complete(storage, "tiny", read_results(finished["out"]))
    state = json.loads((finished["out"] / "state" / "tiny__superglue-cb__ptuning_v2.json").read_text())
    assert state["done"] and state["search_attempts"] == 1 and state["best_trial"]
    assert json.loads((finished["out"] / "state" / "_study.json").read_text())["final_attempts"] == 1
    # Ray Train's checkpoint copies of finished cells are removed (the finals are MLflow artifacts)
    assert not [d for d in (finished["out"] / "ray").iterdir() if re.search(r"__(search|final)-a\d+__", d.name)]
    cached = list((finished["out"] / "cache").iterdir())  # tokenized once, shared by the trials: JSON, never a pickle
    assert cached and all(p.name.endswith(".features.json") for p in cached)


def _stale_checkpoints(out) -> list:
    """Checkpoints left in the Ray storage, and Ray Train run directories."""
    ray = out / "ray"
    return sorted(str(p.relative_to(ray)) for p in ray.rglob("*") if p.name.startswith("checkpoint_") or p.suffix == ".safetensors"
                  or (p.parent == ray and re.search(r"__(search|final)-a\d+__", p.name)))


def test_output_dir_holds_no_stale_checkpoints(finished):
    """After the study: no checkpoint in the Ray storage (Tune's experiment dirs alone stay),
    while every final run's checkpoint is an MLflow artifact; the last line sizes the dir by part."""
    out = finished["out"]
    assert _stale_checkpoints(out) == []
    assert sorted(d.name for d in (out / "ray").iterdir()) == ["tiny__final-a1", "tiny__search-a1"]
    finals = [r for r in mlflow_runs(f"sqlite:///{out / 'mlflow.db'}", "tiny") if r.data.tags.get("ptcore.phase") == "final"]
    ckpts = list((out / "mlartifacts").rglob("trainable.safetensors"))
    assert len(finals) == 4 and len(ckpts) == 4
    line = next((ln for ln in finished["stdout"].splitlines() if "] output dir " in ln), "")
    assert re.search(r"output dir .*out: [\d.]+ [KM]B \(", line) and all(f"{p} " in line for p in ("ray", "cache", "mlflow.db")), line


def test_rerun_needs_resume_and_resume_of_done_study_runs_nothing(finished, capsys):
    path, out = finished["path"], finished["out"]
    before = (out / "results.csv").read_text()
    assert main(["study", str(path)]) == 2
    msg = capsys.readouterr().err
    assert "already holds 8 finished run(s)" in msg and "--resume" in msg
    import os

    cwd = os.getcwd()
    os.chdir(finished["root"])
    try:
        t0 = time.time()
        assert main(["study", str(path), "--resume"]) == 0
        assert time.time() - t0 < 30  # no Ray start when nothing is left to do
    finally:
        os.chdir(cwd)
    assert "already done" in capsys.readouterr().out
    assert (out / "results.csv").read_text() == before
    runs = mlflow_runs(f"sqlite:///{out / 'mlflow.db'}", "tiny")
    assert len(runs) == 11 and all(r.info.status == "FINISHED" for r in runs)  # 1 study + 2 cells + 8 runs, reused


def test_resume_prunes_train_runs_a_killed_attempt_left(finished, capsys):
    """Checkpoints of an attempt cut short (as kill -9 leaves them): gone after a --resume of
    the finished study, which still runs nothing; the final checkpoints in MLflow stay."""
    import os

    out, ray = finished["out"], finished["out"] / "ray"
    cell = "tiny__superglue-cb__ptuning_v2"
    for name in (f"tiny__{cell}__search-a7__dead0001", "tiny__final-a7__p000__dead0002_00000"):
        (ray / name / "checkpoint_000000").mkdir(parents=True)
        (ray / name / "checkpoint_000000" / "trainable.safetensors").write_bytes(b"\0" * 4096)
    assert len(_stale_checkpoints(out)) == 6
    before = (out / "results.csv").read_text()
    cwd = os.getcwd()
    os.chdir(finished["root"])
    try:
        assert main(["study", str(finished["path"]), "--resume"]) == 0
    finally:
        os.chdir(cwd)
    assert _stale_checkpoints(out) == [] and (out / "results.csv").read_text() == before
    assert len(list((out / "mlartifacts").rglob("trainable.safetensors"))) == 4
    assert "output dir " in capsys.readouterr().out


def test_timing(finished):
    print(f"2-cell study wall time: {finished['elapsed']:.1f} s")
