"""Trial faults in a real study (local Ray, Tune + Train V2 local mode, Optuna, MLflow on SQLite):
a search trial whose loss turns NaN, and trials that raise because a backbone's weights file is
corrupt (its config.json reads, so the study validates and starts; loading the weights inside
the trial fails). Each failed trial ends as ERROR in Tune, a FAILED MLflow run tagged with the
one-line reason, and an ``error`` row of results.csv carrying that reason; the study completes
(exit 1: a cell is incomplete), the final phase runs for the cell that has a usable trial, and
``orchestrate report`` shows the failed trials and the cell without a result, with the reasons.

One study for the module (two cells, four 1-epoch search trials, one final run); the tests read
what it left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil

import pandas as pd
import pytest

from orch_study_helpers import mlflow_runs, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)
from orchestrator.cli.app import main
from test_report import row_of, table_rows

IDS = {"trial_id": str, "source_trial": str}
GOOD_LR, NAN_LR = 0.01, 1e30  # 1e30: the tiny model's loss is NaN at the second step
NAN_REASON = r"^ptcore\.errors\.TrainingError: loss is (nan|inf) at epoch 1 step \d+ \(ptuning_v2 on superglue/cb, lr=1e\+30\)"
WEIGHTS_REASON = r"^ptcore\.errors\.ConfigError: model '.*broken': its weights could not be loaded from .*broken \(SafetensorError: "


def _tpe_seed_trying_both(ls) -> int:
    """A budget seed whose TPE start-up, in the good backbone's cell, tries the good learning
    rate and the NaN one (each cell's sampler is seeded as orchestrator.execution.search.cell_search
    seeds it), so the cell has one failed and one usable trial."""
    import optuna

    from orchestrator.execution.search import cell_seed, optuna_space

    cell = next(c for c in ls.cells() if c.backbone.label == "tiny")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(100):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=cell_seed(seed, cell.id, 0)), direction="maximize")
        if {study.ask(optuna_space(cell.method.search)).params["lr"] for _ in range(2)} == {GOOD_LR, NAN_LR}:
            return seed
    raise AssertionError("no TPE seed tries both learning rates")  # pragma: no cover


@pytest.fixture(scope="module")
def faulty(tiny_bert, tmp_path_factory):  # noqa: F811
    from orchestrator.study import load_study

    root = tmp_path_factory.mktemp("faults")
    broken = root / "broken"
    shutil.copytree(tiny_bert, broken)
    (broken / "model.safetensors").write_bytes(b"\x00 not a safetensors file" * 16)  # config.json still reads
    out = root / "out"
    raw = tiny_study(
        tiny_bert, out,
        name="faults",
        backbones=[{"id": str(tiny_bert), "label": "tiny"}, {"id": str(broken), "label": "broken"}],
        tasks=["superglue/cb"],
        methods=[{"name": "ptuning_v2", "fixed": {"prompt_length": 4}, "search": {"lr": {"type": "choice", "values": [GOOD_LR, NAN_LR]}}}],
        train={"epochs": 1, "batch_size": 4, "max_length": 48},
        final={"seeds": [0]},
    )  # fmt: skip
    raw["budget"] = {"trials_per_cell": 2, "max_concurrent": 2, "seed": 0}
    ls = load_study(raw=raw, cwd=root)
    raw["budget"]["seed"] = _tpe_seed_trying_both(ls)
    path = write_study(root / "faults.yaml", raw)
    stdout, stderr = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)  # the study runs from its own directory (the report goes to <output_dir>/report)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(["study", str(path)])
    finally:
        os.chdir(cwd)
    df = pd.read_csv(out / "results.csv", dtype=IDS)
    return {"path": path, "out": out, "root": root, "rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "df": df, "cells": {c.backbone.label: c.id for c in ls.cells()}}


def _errors(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.status == "error"]


def test_study_completes_and_finals_run_for_the_usable_cell(faulty):
    # README: the study runs to its end and exits 1 when a cell is left incomplete (0 when every cell has its results)
    assert faulty["rc"] == 1, faulty["stderr"][-3000:]
    assert re.search(r"1 cell\(s\) incomplete .*: broken__superglue-cb__ptuning_v2$", faulty["stderr"].strip(), re.M)
    df = faulty["df"]
    tiny, broken = df[df.cell == faulty["cells"]["tiny"]], df[df.cell == faulty["cells"]["broken"]]
    search = tiny[tiny.phase == "search"]
    assert sorted(search.status) == ["error", "ok"]
    ok = search[search.status == "ok"].iloc[0]
    assert json.loads(ok.params_json) == {"lr": GOOD_LR}
    (final,) = tiny[tiny.phase == "final"].itertuples()
    assert final.status == "ok" and final.source_trial == ok.trial_id and pd.notna(final.val_primary)
    assert list(broken.phase) == ["search", "search"] and set(broken.status) == {"error"}  # nothing to select: no final run
    assert f"report: {faulty['out'] / 'report'}" in faulty["stdout"]  # beside results.csv


def test_results_rows_carry_the_real_reason(faulty):
    errors = _errors(faulty["df"])
    nan = errors[errors.cell == faulty["cells"]["tiny"]]
    assert len(nan) == 1 and json.loads(nan.iloc[0].params_json) == {"lr": NAN_LR}
    assert re.match(NAN_REASON, nan.iloc[0].error), nan.iloc[0].error
    weights = errors[errors.cell == faulty["cells"]["broken"]]
    assert len(weights) == 2 and sorted(json.loads(p)["lr"] for p in weights.params_json) == [GOOD_LR, NAN_LR]
    for reason in weights.error:
        assert re.match(WEIGHTS_REASON, reason) and "header" in reason, reason
    for reason in errors.error:  # one line, the cause itself: no Ray wrapper, no traceback
        assert "\n" not in reason and "unknown error" not in reason and not re.search(r"Ray|TrainingFailed|Traceback", reason)


def test_tune_ends_failed_trials_in_error_with_the_error(faulty):
    from ray.tune import ExperimentAnalysis

    errors = _errors(faulty["df"]).set_index("trial_id").error
    trials = {t.trial_id: t for t in ExperimentAnalysis(str(faulty["out"] / "ray" / "faults__search-a1")).trials}
    assert set(trials) == set(faulty["df"][faulty["df"].phase == "search"].trial_id)
    for trial_id, t in trials.items():
        if trial_id in errors.index:
            assert t.status == "ERROR" and errors[trial_id] in (t.get_error() or ""), trial_id
        else:
            assert t.status == "TERMINATED" and not t.get_error()


def test_mlflow_runs_failed_with_the_reason(faulty):
    runs = mlflow_runs(f"sqlite:///{faulty['out'] / 'mlflow.db'}", "faults")
    by_trial = {r.data.tags["ptcore.trial_id"]: r for r in runs if r.data.tags.get("ptcore.kind") == "run"}
    df = faulty["df"]
    assert set(by_trial) == set(df.trial_id)
    for row in df.itertuples():
        run = by_trial[row.trial_id]
        assert run.info.run_id == row.mlflow_run_id
        if row.status == "error":
            assert run.info.status == "FAILED" and run.data.tags["ptcore.status"] == "error"
            assert run.data.tags["ptcore.error"] == row.error
        else:
            assert run.info.status == "FINISHED" and "ptcore.error" not in run.data.tags
    cells = {r.data.tags["ptcore.cell"]: r.info.status for r in runs if r.data.tags.get("ptcore.kind") == "cell"}
    assert cells == {faulty["cells"]["tiny"]: "FINISHED", faulty["cells"]["broken"]: "FAILED"}
    (study,) = [r for r in runs if r.data.tags.get("ptcore.kind") == "study"]
    assert study.info.status == "FINISHED"


def test_report_shows_the_gap(faulty, tmp_path):
    assert main(["report", str(faulty["path"]), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    errors = _errors(faulty["df"])
    nan = errors[errors.cell == faulty["cells"]["tiny"]].iloc[0]
    weights = errors[errors.cell == faulty["cells"]["broken"]]

    # the search summary counts the failed trials, in their own backbone's row (one row per cell)
    header, rows = table_rows(text.split("## Hyperparameter search")[1], "Backbone")
    assert len(rows) == 2
    tiny, broken = row_of(rows, "tiny (2 layers, 27.2K)"), row_of(rows, "broken")
    col = {h: header.index(h) for h in ("Trials", "Completed", "Failed", "Selected trial")}
    assert [tiny[col[h]] for h in ("Trials", "Completed", "Failed")] == ["2", "1", "1"]
    assert tiny[col["Selected trial"]] == faulty["df"].query("phase == 'final'").source_trial.iloc[0]
    assert [broken[col[h]] for h in ("Trials", "Completed", "Failed", "Selected trial")] == ["2", "0", "2", "–"]
    assert "(4 trials: 1 completed, 0 stopped early by successive halving" in text and "3 failed)" in text

    # the main table: the cell without a result is shown as missing, and why
    header, rows = table_rows(text, "Backbone")
    main_rows = [r for r in rows if r[1] == "P-Tuning v2"]
    assert [r[0] for r in main_rows] == ["tiny (2 layers, 27.2K)", "broken"]
    assert main_rows[0][header.index("CB")] != "–" and main_rows[1][header.index("CB")] == "–"
    assert (f"- P-Tuning v2 on CB, broken: no successful final run (not run: all 2 search trials failed: "
            f"{weights.error.iloc[0]})") in text

    # every failed run, with the reason the ledger recorded
    ids = ", ".join(sorted(weights.trial_id))
    assert f"- P-Tuning v2 on CB, tiny (2 layers, 27.2K): search trial {nan.trial_id} failed: {nan.error}" in text
    assert f"- P-Tuning v2 on CB, broken: search trials {ids} failed: {weights.error.iloc[0]}" in text
    tex = (tmp_path / "results.tex").read_text()
    assert "Failed runs (status error in the ledger)" in tex and "loss is nan" in tex.replace("loss is inf", "loss is nan")
