"""Study regimes (full / few_shot / multitask): schema, the runs they compose, the report's
regimes table, and (slow) a real study on local Ray."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import pandas as pd
import pytest

from orch_study_helpers import FIXTURE_DATA, IDS, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)
from orchestrator.cli.app import main
from orchestrator.study import StudyError, compose_run, load_study

BASE = {
    "name": "reg",
    "backbones": [{"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2, "label": "L2"}],
    "tasks": ["superglue/cb", "glue/sst2"],
    "methods": [{"name": "ptuning_v2", "fixed": {"lr": 0.01}}],
    "train": {"epochs": 1, "max_train_examples": 300, "max_dev_examples": 50},
    "final": {"seeds": [0, 1, 2]},
    "regimes": [
        {"name": "full"},
        {"name": "few_shot", "train_size": 32, "data_seeds": [10, 11, 12], "train": {"epochs": 20}},
        {"name": "multitask", "mixing": "temperature", "mixing_temperature": 3},
    ],
}


def loaded(raw):
    return load_study(raw=copy.deepcopy(raw), output_dir="/tmp/unused-reg")


def test_cells_and_the_runs_they_compose():
    ls = loaded(BASE)
    ids = [c.id for c in ls.cells()]
    assert ids == ["L2__superglue-cb__ptuning_v2__full", "L2__glue-sst2__ptuning_v2__full",
                   "L2__superglue-cb__ptuning_v2__few_shot-32", "L2__glue-sst2__ptuning_v2__few_shot-32",
                   "L2__superglue-cb-glue-sst2__ptuning_v2__multitask"]
    full, _, few, _, multi = ls.cells()
    assert compose_run(ls, full, seed=1)["max_train_examples"] == 300  # full: the study's train settings
    runs = [compose_run(ls, few, seed=s) for s in (0, 1, 2)]
    assert [r["data_seed"] for r in runs] == [10, 11, 12]  # final run i draws its sample with data_seeds[i]
    assert all(r["train_size"] == 32 and r["dev_size"] == 32 and r["epochs"] == 20 for r in runs)
    assert "max_train_examples" not in runs[0] and "max_dev_examples" not in runs[0]  # the regime's sample replaces the caps
    assert compose_run(ls, few)["data_seed"] == 10  # search runs: the first data seed
    m = compose_run(ls, multi, seed=2)
    assert m["task"] == "superglue/cb+glue/sst2" and m["mixing"] == "temperature" and m["mixing_temperature"] == 3
    assert ls.plan()["regimes"] == ["full", "few_shot-32", "multitask"]


def test_no_regimes_keeps_cell_ids():
    raw = {k: v for k, v in BASE.items() if k != "regimes"}
    assert [c.id for c in loaded(raw).cells()] == ["L2__superglue-cb__ptuning_v2", "L2__glue-sst2__ptuning_v2"]


def test_few_shot_seed_defaults_to_the_run_seed():
    raw = copy.deepcopy(BASE)
    raw["regimes"][1].pop("data_seeds")
    ls = loaded(raw)
    few = ls.cells()[2]
    assert [compose_run(ls, few, seed=s)["data_seed"] for s in (0, 1, 2)] == [0, 1, 2]


@pytest.mark.parametrize(
    "edit, where, says",
    [
        (lambda r: r["regimes"][1].pop("train_size"), "regimes.1.train_size", "few_shot needs train_size"),
        (lambda r: r["regimes"][1].update(data_seeds=[1, 2]), "regimes.1.data_seeds", "one per final seed"),
        (lambda r: r["regimes"][0].update(tasks=["superglue/cb", "glue/rte"]), "regimes.0.tasks", "for the multitask regime"),
        (lambda r: r["regimes"][2].update(tasks=["superglue/cb", "superglue/cbb"]), "regimes.2.tasks.1", "unknown task"),
        (lambda r: r["regimes"][1]["train"].update(train_size=8), "regimes.1.train.train_size", "a regime key"),
        (lambda r: r["regimes"].append({"name": "full"}), "regimes.3", "listed twice"),
        (lambda r: r["regimes"][1]["train"].update(epochz=3), "regimes.1.train.epochz", "did you mean 'epochs'"),
    ],
)
def test_bad_regimes_are_one_line_errors(edit, where, says):
    raw = copy.deepcopy(BASE)
    edit(raw)
    with pytest.raises(StudyError) as e:
        loaded(raw)
    msg = str(e.value)
    assert f"{where}:" in msg and says in msg and "\n" not in msg, msg


# ------------------------------------------------------------------ the report


def _row(regime, task, method, seed, val, **extra):
    return {"study": "reg", "cell": f"{task}-{method}-{regime}", "backbone": "L2", "model": "m", "layers": 2,
            "total_params": 100, "task": task, "method": method, "method_label": method, "regime": regime, "phase": "final",
            "trial_id": "fixed", "source_trial": "fixed", "run_index": seed, "seed": seed, "status": "ok",
            "dev_primary": 0.5, "val_primary": val, "primary_metric": "accuracy", "trainable_params": 10,
            "data_json": json.dumps(extra.pop("data", {"sizes": {"train": 225, "dev": 25, "val": 56}})), **extra}


def test_regimes_table(tmp_path):
    from orchestrator.report import build_report
    from orchestrator.report.load import StudyResults, normalise
    from orchestrator.report.markdown import render_markdown

    rows = []
    for s, (a, b, c) in enumerate([(0.70, 0.50, 0.72), (0.74, 0.60, 0.76), (0.72, 0.40, 0.71)]):
        rows.append(_row("full", "superglue/cb", "finetune", s, a))
        rows.append(_row("few_shot-32", "superglue/cb", "finetune", s, b, data={"sizes": {"train": 32, "dev": 32, "val": 56}}))
        rows.append(_row("multitask", "superglue/cb+glue/sst2", "finetune", s, (c + 0.8) / 2,
                         **{"val_superglue-cb_primary": c, "val_glue-sst2_primary": 0.8},
                         data={"task_sizes": {"superglue/cb": {"train": 225, "dev": 25}, "glue/sst2": {"train": 1000, "dev": 200}}}))
    config = {"regimes": [{"name": "full"}, {"name": "few_shot", "train_size": 32}, {"name": "multitask"}], "final": {"seeds": [0, 1, 2]}}
    rep = build_report(StudyResults(name="reg", output_dir=tmp_path, config=config, rows=[normalise(r) for r in rows]))
    rt = rep.regimes
    assert rt.regimes == ["full", "few_shot-32", "multitask"]
    assert rt.cells[("superglue/cb", "finetune", "few_shot-32")].values == pytest.approx([50.0, 60.0, 40.0])
    assert rt.cells[("superglue/cb", "finetune", "multitask")].values == pytest.approx([72.0, 76.0, 71.0])  # CB's own score
    assert rt.cells[("glue/sst2", "finetune", "multitask")].mean == pytest.approx(80.0)
    assert rt.train_sizes[("superglue/cb", "few_shot-32")] == "32" and rt.train_sizes[("glue/sst2", "multitask")] == "1,000"
    # the main tables hold the full regime only
    assert [c.mean for r in rep.rows for c in r.cells.values()] == pytest.approx([72.0])
    md = render_markdown(rep)
    assert "## Regimes" in md and "50.0 ± 10.0 (3)" in md and "**full** regime" in md


def test_one_regime_has_no_regimes_table(tmp_path):
    from orchestrator.report import build_report
    from orchestrator.report.load import StudyResults, normalise

    rows = [normalise(_row("full", "superglue/cb", "finetune", s, 0.7)) for s in range(2)]
    rep = build_report(StudyResults(name="reg", output_dir=tmp_path, config={}, rows=rows))
    assert rep.regimes is None and rep.main_regime is None


# ------------------------------------------------------------------ a real study


@pytest.mark.slow
def test_regimes_study_end_to_end(tiny_bert, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    raw = tiny_study(tiny_bert, out, name="regimes")
    raw["methods"] = [{"name": "ptuning_v2", "fixed": {"prompt_length": 4, "lr": 0.01}}]
    raw["final"] = {"seeds": [0, 1], "runs_per_trial": 2}
    raw["regimes"] = [{"name": "full"}, {"name": "few_shot", "train_size": 4, "dev_size": 2}, {"name": "multitask"}]
    path = write_study(tmp_path / "regimes.yaml", raw)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["study", str(path)]) == 0
    finally:
        os.chdir(cwd)
    df = pd.read_csv(out / "results.csv", dtype=IDS)
    finals = df[df.phase == "final"]
    assert sorted(finals.groupby("regime").size().items()) == [("few_shot-4", 4), ("full", 4), ("multitask", 2)]
    few = finals[finals.regime == "few_shot-4"]
    assert set(few.train_examples) == {4}
    assert {json.loads(c)["data_seed"] for c in few.config_json} == {0, 1}  # each seed its own sample
    multi = finals[finals.regime == "multitask"]
    assert set(multi.task) == {"superglue/cb+superglue/rte"} and multi["val_superglue-cb_primary"].notna().all()
    md = (out / "report" / "results.md").read_text()
    assert "## Regimes" in md and "multitask" in md


def test_longest_first_without_search_rows():
    """Fixed configurations (no search rows): packs ordered by training examples x tasks x
    epochs, so the multi-task packs start first instead of running alone at the end."""
    from orchestrator.execution.phases import Phases, static_cost
    from orchestrator.execution.recorder import Job

    raw = copy.deepcopy(BASE)
    raw["train"]["epochs"], raw["regimes"][1]["train"]["epochs"] = 3, 12  # as studies/regimes.yaml
    ls = loaded(raw)
    cells = ls.cells()

    class NoRows:
        def select(self, **where):
            return []

    phases = Phases.__new__(Phases)
    phases.cells, phases.results = cells, NoRows()
    jobs = [Job(c, "run", [compose_run(ls, c, seed=s) for s in (0, 1, 2)], {}) for c in cells]
    ordered = phases._longest_first([[j] for j in jobs])
    assert ordered[0][0].cell.regime.name == "multitask" and ordered[-1][0].cell.regime.name == "few_shot"
    assert static_cost({"task": "a+b", "train_size": 10, "epochs": 3}) == 60.0
