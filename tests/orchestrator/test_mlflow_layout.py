"""The MLflow layout of a study, readable at a glance (:mod:`orchestrator.tracking.tracker`): run names
task first, the same ``ptcore.*`` tags on every run, a cell run's selected configuration as
params and its summary as metrics, a run's constants as params and its per-epoch values as
metrics, the experiment described and marked as model training.

Without Ray: :class:`~orchestrator.execution.runner.StudyRunner` runs a tiny study whose two phases
drive fake trials through the real :class:`~orchestrator.execution.recorder.Recorder` and
:class:`~orchestrator.execution.phases.Phases` (the real study checks the same, test_study_e2e.py)."""

from __future__ import annotations

import json

import pytest

from orch_study_helpers import assert_mlflow_layout, mlflow_runs, tiny_bert, tiny_study  # noqa: F401  (tiny_bert: fixture)
from orchestrator.execution.phases import Phases
from orchestrator.execution.recorder import Job, Recorder
from orchestrator.execution.runner import StudyRunner
from orchestrator.study import compose_run, load_study
from orchestrator.tracking.tracker import Tracker, cell_title, experiment_tags
from orchestrator.execution.trial import CELL_KEY, merge_params

DESCRIPTION = "CB and RTE x P-Tuning v2 on a tiny BERT: the MLflow layout"
EPOCHS = 2


class FakeTrial:
    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config = trial_id, config

    def get_error(self):
        return None


def _result(task: str, seed: int, dev: float, val: float | None) -> dict:
    """ptcore's result record of a run, as a trial's final report carries it."""
    return {
        "task": task, "method": "ptuning_v2", "layers": 2, "seed": seed, "primary_metric": "accuracy",
        "dev": {"accuracy": dev, "primary": dev}, **({"val": {"accuracy": val, "primary": val}} if val is not None else {}),
        "best_epoch": EPOCHS, "epochs_run": EPOCHS, "trainable_params": 10, "total_params": 100, "trainable_pct": 10.0,
        "checkpoint_bytes": 40, "train_examples": 8, "wall_s": 1.0, "train_s": 0.5, "history": [],
        "config": {"lr": 0.01, "seed": seed, "method_args": {"prompt_length": 4}}, "config_hash": "abc123",
        "versions": {"torch": "2.13.0"}, "git": {"commit": "deadbeef", "dirty": False},
    }  # fmt: skip


def _drive(rec: Recorder, trial: FakeTrial, task: str, runs: list[tuple[int, float, float | None]]) -> None:
    """A trial through the recorder: per run (seed, dev, val) two epochs, then its final report."""
    rec.on_trial_start(0, [], trial)
    for i, (seed, dev, val) in enumerate(runs):
        for epoch in range(1, EPOCHS + 1):
            rec.on_trial_result(0, [], trial, {
                "epoch": epoch, "run_index": i, "seed": seed, "final": 0, "train_loss": 1.0 / epoch, "lr": 0.01 / epoch,
                "dev_accuracy": dev, "dev_primary": dev, "trainable_params": 10, "total_params": 100, "layers": 2, "node_id": "n1",
            })  # fmt: skip
        res = _result(task, seed, dev, val)
        rec.on_trial_result(0, [], trial, {"final": 1, "run_index": i, "seed": seed, "epoch": EPOCHS, "dev_primary": dev,
                                           "node_id": "n1", "result_json": json.dumps(res)})
    rec.on_trial_complete(0, [], trial)


def _recorder(phases: Phases, phase: str, **kwargs) -> Recorder:
    return Recorder(study=phases.ls, phase=phase, tracker=phases.tracker, results=phases.results, progress=phases.progress,
                    common_tags=phases.tags, git=phases.git, epochs=EPOCHS, **kwargs)


def _fake_search(self: Phases) -> None:
    """``Phases.search_phase`` without Ray: two trials per cell, the second one better."""
    def job(index: int, params: dict) -> Job:
        cell = self.cells[index]
        return Job(cell, self._cell_run(cell), [merge_params(compose_run(self.ls, cell), params)], params)

    rec = _recorder(self, "search", search_job=job, on_recorded=self._search_recorded)
    for cell in self.cells:
        for k, dev in enumerate((0.5, 0.75)):
            _drive(rec, FakeTrial(f"c{cell.index}t{k}", {CELL_KEY: cell.index, "lr": 0.01 * (k + 1)}), cell.task, [(0, dev, None)])


def _fake_finals(self: Phases) -> None:
    """``Phases.finals`` without Ray: its jobs (``Phases.final_jobs``), one trial each."""
    jobs = self.final_jobs()
    rec = _recorder(self, "final", packs=[[job] for job in jobs], on_recorded=self._on_final_recorded)
    for k, job in enumerate(jobs):
        _drive(rec, FakeTrial(f"f{k}", {"job": k}), job.cell.task, [(v["seed"], 0.75, 0.5 + v["seed"] / 10) for v in job.runs])


@pytest.fixture(scope="module")
def layout(tiny_bert, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("layout")
    raw = tiny_study(tiny_bert, root / "out", description=DESCRIPTION)
    raw["backbones"][0]["label"] = "MiniLM-L6"
    ls = load_study(raw=raw, cwd=root)
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(root))  # the machine-wide local-Ray lock: no Ray starts here
        mp.setattr(Phases, "search_phase", _fake_search)
        mp.setattr(Phases, "finals", _fake_finals)
        summary = StudyRunner(ls, write=lines.append).run()
    assert [s["done"] for s in summary] == [True, True], lines
    return {"uri": ls.mlflow_uri, "runs": mlflow_runs(ls.mlflow_uri, "tiny")}


def test_run_names_lead_with_the_task(layout):
    names = sorted(r.info.run_name for r in layout["runs"])
    cells = {0: "CB · P-Tuning v2 · MiniLM-L6", 1: "RTE · P-Tuning v2 · MiniLM-L6"}
    leaves = [f"{name} · {what}" for i, name in cells.items() for what in (f"trial c{i}t0", f"trial c{i}t1", "seed 0", "seed 1")]
    assert names == sorted(["tiny", *cells.values(), *leaves])


def test_layout_at_a_glance(layout):
    """Tags on every run, the cells' params and metrics, constants as params, lr_schedule,
    the experiment's description and kind (the check the real study passes too)."""
    assert_mlflow_layout(layout["uri"], "tiny", DESCRIPTION)


def test_cell_run_holds_the_selection_and_the_summary(layout):
    (cb,) = [r for r in layout["runs"] if r.info.run_name == "CB · P-Tuning v2 · MiniLM-L6"]
    p, m = cb.data.params, cb.data.metrics
    assert cb.data.tags["ptcore.best_trial"] == "c0t1" and "ptcore.stale_params" not in cb.data.tags
    assert (p["lr"], p["prompt_length"], p["epochs"], p["task"]) == ("0.02", "4", "2", "superglue/cb")  # the better trial's lr
    assert m["best_dev"] == 0.75 and m["final_ok"] == 2 and m["trainable_pct"] == 10.0
    assert m["val_mean"] == pytest.approx(0.55) and m["val_std"] == pytest.approx(0.0707, abs=1e-4)


def test_leaf_runs_log_constants_as_params_and_epochs_as_metrics(layout):
    (run,) = [r for r in layout["runs"] if r.info.run_name == "CB · P-Tuning v2 · MiniLM-L6 · seed 1"]
    p, m = run.data.params, run.data.metrics
    assert (p["trainable_params"], p["total_params"], p["checkpoint_bytes"], p["best_epoch"], p["epochs_run"]) == ("10", "100", "40", "2", "2")
    assert p["lr"] == "0.02" and m["lr_schedule"] == 0.005  # the peak; where the schedule ended
    assert {"val_primary", "best_dev_primary", "trainable_pct", "wall_s", "train_s"} <= set(m)
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=layout["uri"]).get_metric_history(run.info.run_id, "lr_schedule")
    assert [(h.step, h.value) for h in history] == [(1, 0.01), (2, 0.005)]


def test_cell_title_of_regimes_and_multitask(tiny_bert, tmp_path):  # noqa: F811
    raw = tiny_study(tiny_bert, tmp_path / "out", regimes=[
        {"name": "full"}, {"name": "few_shot", "train_size": 32}, {"name": "multitask", "mixing": "temperature", "mixing_temperature": 2},
    ])  # fmt: skip
    raw["backbones"][0]["label"] = "MiniLM-L6"
    titles = {cell_title(c) for c in load_study(raw=raw, cwd=tmp_path).cells()}
    assert titles == {
        "CB · P-Tuning v2 · MiniLM-L6", "RTE · P-Tuning v2 · MiniLM-L6",
        "CB · P-Tuning v2 · MiniLM-L6 · few_shot-32", "RTE · P-Tuning v2 · MiniLM-L6 · few_shot-32",
        "CB+RTE · P-Tuning v2 · MiniLM-L6 · multitask",
    }  # fmt: skip


def test_reused_experiment_and_run_take_the_current_description_and_name(tmp_path):
    """A study resumed after its description changed, or one tracked before runs had these
    names: the experiment and the study / cell runs it finds again are brought up to date."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "x", tmp_path / "art", tags=experiment_tags("first"))
    tracker = Tracker(uri, "x", tmp_path / "art", tags=experiment_tags("second"))
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.note.content"] == "second" and tags["mlflow.experimentKind"] == "custom_model_development"
    old = tracker.reuse_or_create("tiny__superglue-cb__ptuning_v2", {"ptcore.kind": "cell", "ptcore.cell": "c"}, {})
    again = tracker.reuse_or_create("CB · P-Tuning v2 · tiny", {"ptcore.kind": "cell", "ptcore.cell": "c"}, {"ptcore.phase": "cell"})
    run = tracker.client.get_run(again)
    assert again == old and run.info.run_name == "CB · P-Tuning v2 · tiny" and run.data.tags["ptcore.phase"] == "cell"


def test_leaf_runs_name_their_data_files_with_digests(layout):
    """The official files each run read, as MLflow dataset inputs: name, role, digest."""
    import hashlib

    from orch_study_helpers import FIXTURE_DATA

    (run,) = [r for r in layout["runs"] if r.info.run_name == "CB · P-Tuning v2 · MiniLM-L6 · seed 0"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"superglue/cb/train", "superglue/cb/val"}
    for role, fname in (("train", "train.jsonl"), ("val", "val.jsonl")):
        d = inputs[f"superglue/cb/{role}"]
        path = FIXTURE_DATA / "superglue" / "CB" / fname
        assert d.dataset.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        assert json.loads(d.dataset.source)["path"] == str(path)
        assert {t.key: t.value for t in d.tags}["mlflow.data.context"] == role


def test_search_plots(tmp_path):
    """A cell's Optuna study drawn: parallel coordinates and importances as PNGs; too few
    trials draw nothing and say why."""
    import optuna

    from orchestrator.tracking.search_plots import draw

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s/cell", storage=storage, direction="maximize")
    assert draw(storage, "s/cell", tmp_path / "none") == ([], ["0 completed trial(s), 0 searched parameter(s): nothing to draw"])
    for lr, length in ((1e-3, 8), (1e-2, 16), (3e-2, 32), (3e-3, 8)):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "prompt_length": length}, value=0.5 + lr,
            distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                           "prompt_length": optuna.distributions.CategoricalDistribution([8, 16, 32])}))  # fmt: skip
    written, skipped = draw(storage, "s/cell", tmp_path / "plots")
    assert sorted(p.name for p in written) == ["parallel_coordinates.png", "param_importances.png"] and skipped == []
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_cell_run_says_why_it_has_no_search_plots(layout):
    """The fake search here has no Optuna study: the cell run says so rather than failing."""
    (cb,) = [r for r in layout["runs"] if r.info.run_name == "CB · P-Tuning v2 · MiniLM-L6"]
    assert "ptcore.search_plots" in cb.data.tags


def test_ui_links_open_the_model_training_view(layout):
    """`orchestrate ui` prints each experiment's runs table with the query that selects MLflow
    3.17's model-training view (the experiment tag alone does not)."""
    from orchestrator.cli.ui import experiment_links

    links = experiment_links(layout["uri"], "http://127.0.0.1:5000")
    assert [name for name, _ in links] == ["tiny"]
    assert links[0][1].startswith("http://127.0.0.1:5000/#/experiments/") and links[0][1].endswith("?workflowType=machine_learning")
