"""A real 2-cell study end to end: local Ray (Tune + Train V2), Optuna, MLflow on SQLite,
a tiny random BERT on disk and the SuperGLUE fixtures. One study run for the module;
the tests read what it left behind."""

from __future__ import annotations

import json
import re
import time

import pandas as pd
import pytest

from orch_study_helpers import mlflow_runs, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)
from orchestrator.cli import main

IDS = {"trial_id": str, "source_trial": str}  # ids like 01234567 stay strings


@pytest.fixture(scope="module")
def finished(tiny_bert, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("e2e")
    out = root / "out"
    path = write_study(root / "tiny.yaml", tiny_study(tiny_bert, out))
    import os

    cwd = os.getcwd()
    os.chdir(root)  # the optional report module writes reports/<name> under the working directory
    try:
        t0 = time.time()
        rc = main(["study", str(path)])
        elapsed = time.time() - t0
    finally:
        os.chdir(cwd)
    assert rc == 0
    return {"path": path, "out": out, "root": root, "elapsed": elapsed}


def test_results_table(finished):
    df = pd.read_csv(finished["out"] / "results.csv", dtype=IDS)
    required = [
        "study", "cell", "backbone", "layers", "total_params", "task", "method", "phase", "trial_id", "seed", "status",
        "dev_primary", "val_primary", "test_primary", "best_epoch", "epochs_run", "trainable_params", "trainable_pct",
        "checkpoint_bytes", "wall_s", "train_s", "config_json", "config_hash", "git_commit", "val_accuracy",
    ]  # fmt: skip
    assert set(required) <= set(df.columns)
    assert "val_macro_f1" in df.columns  # CB's second metric
    assert len(df) == 8  # 2 cells x (2 search trials + 2 final seeds)
    for cell, g in df.groupby("cell"):
        search, final = g[g.phase == "search"], g[g.phase == "final"]
        assert len(search) == 2 and search.trial_id.is_unique
        assert set(search.status) <= {"ok", "pruned"}
        assert sorted(final.seed) == [0, 1] and set(final.status) == {"ok"}
        best = search.loc[search.dev_primary.idxmax()]
        assert set(final.source_trial) == {best.trial_id}  # finals re-run the best search config
        assert final.val_primary.notna().all() and (final.layers == 2).all()
        cfg = json.loads(final.iloc[0].config_json)
        assert cfg["lr"] == pytest.approx(json.loads(best.params_json)["lr"])
        assert cfg["method_args"]["prompt_length"] == 4 and cfg["seed"] in (0, 1)
        assert (final.trainable_params < final.total_params).all()
        # the ledger's report inputs: each final run's data budget and per-item val predictions
        from ptcore.metrics import METRICS

        for _, row in final.iterrows():
            budget = json.loads(row.data_json)
            assert budget["sizes"]["val"] > 0 and budget["epochs"] == cfg["epochs"] and budget["train_label_counts"]
            stored = json.loads((finished["out"] / row.predictions).read_text())["val"]
            recomputed = METRICS.get(row.primary_metric)(stored["predictions"], stored["references"], groups=stored["groups"])
            assert recomputed == pytest.approx(row.val_primary)
        assert search.predictions.isna().all()  # search runs report no val
    assert set(df.task) == {"superglue/cb", "superglue/rte"}
    assert not list(finished["out"].glob(".results.csv.*"))  # atomic writes leave no temp files


def test_mlflow_hierarchy(finished):
    uri = f"sqlite:///{finished['out'] / 'mlflow.db'}"
    runs = mlflow_runs(uri, "tiny")
    assert all(r.info.status == "FINISHED" for r in runs), {r.info.run_name: r.info.status for r in runs}
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags.get("ptcore.kind"), []).append(r)
    (study,) = by_kind["study"]
    cells = by_kind["cell"]
    assert len(cells) == 2 and all(c.data.tags["mlflow.parentRunId"] == study.info.run_id for c in cells)
    cell_ids = {c.info.run_id: c.data.tags["ptcore.cell"] for c in cells}
    trials = by_kind["run"]
    assert len(trials) == 8
    for r in trials:
        t = r.data.tags
        assert cell_ids[t["mlflow.parentRunId"]] == t["ptcore.cell"]
        assert t["ptcore.phase"] in ("search", "final")
        assert "ptcore.git_commit" in t and "ptcore.version.torch" in t and t["ptcore.study_hash"]
        assert r.data.params["method.prompt_length"] == "4" and "lr" in r.data.params and r.data.params["model"]
        assert "dev_primary" in r.data.metrics
    final = [r for r in trials if r.data.tags["ptcore.phase"] == "final"]
    assert len(final) == 4 and all("val_primary" in r.data.metrics and "trainable_params" in r.data.metrics for r in final)
    # per-epoch metrics at step = epoch; the final run's checkpoint is an artifact
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    steps = [m.step for m in client.get_metric_history(final[0].info.run_id, "dev_primary") if m.step > 0]
    assert steps[:2] == [1, 2]
    arts = {a.path for a in client.list_artifacts(final[0].info.run_id, "checkpoint")}
    assert {"checkpoint/trainable.safetensors", "checkpoint/run_config.json"} <= arts


def test_optuna_storage_and_state(finished):
    import optuna

    storage = f"sqlite:///{finished['out'] / 'optuna.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"tiny/tiny__superglue-cb__ptuning_v2", "tiny/tiny__superglue-rte__ptuning_v2"}
    for name in names:
        assert len(optuna.load_study(study_name=name, storage=storage).trials) == 2
    state = json.loads((finished["out"] / "state" / "tiny__superglue-cb__ptuning_v2.json").read_text())
    assert state["done"] and state["search_attempts"] == 1 and state["best_trial"]
    assert json.loads((finished["out"] / "state" / "_study.json").read_text())["final_attempts"] == 1
    # Ray Train's checkpoint copies of finished cells are removed (the finals are MLflow artifacts)
    assert not [d for d in (finished["out"] / "ray").iterdir() if re.search(r"__(search|final)-a\d+__", d.name)]
    assert list((finished["out"] / "cache").glob("*.pkl"))  # tokenized once, shared by the trials


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


def test_timing(finished):
    print(f"2-cell study wall time: {finished['elapsed']:.1f} s")
