"""The Tune trial's Ray Train settings (no Ray cluster needed)."""

import json

import pytest

pytest.importorskip("ray.train")

from orch_study_helpers import FIXTURE_DATA  # noqa: E402
from orchestrator.execution.runner import StudyRunner  # noqa: E402
from orchestrator.study import load_study  # noqa: E402
from orchestrator.execution.trial import _trainer_class  # noqa: E402

TRAIN_ENV = ("RAY_ADDRESS", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_METRICS_ENABLED",
             "TUNE_FUNCTION_THREAD_TIMEOUT_S")


def _study(tmp_path):
    raw = {"name": "t", "backbones": [{"id": "bert-base-uncased"}], "tasks": ["superglue/cb"], "methods": [{"name": "finetune"}],
           "data_dir": str(FIXTURE_DATA), "output_dir": str(tmp_path / "out")}  # fmt: skip
    return load_study(raw=raw, cwd=tmp_path)


def test_train_env_local_vs_cluster(tmp_path, monkeypatch):
    for key in TRAIN_ENV:
        monkeypatch.delenv(key, raising=False)
    ls = _study(tmp_path)
    local = StudyRunner(ls)._train_env()
    common = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}
    assert local == {**common, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}
    # on a cluster, preemption watching and metrics keep Ray's defaults
    assert StudyRunner(ls, address="ray://head:10001")._train_env() == common
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")  # the user's setting wins
    assert StudyRunner(ls)._train_env()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"


def test_trainer_starts_no_dataset_manager_without_datasets():
    import ray.train
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

    trainer = _trainer_class()(lambda: None, scaling_config=ray.train.ScalingConfig(num_workers=1))
    callbacks = trainer._create_default_callbacks()
    assert callbacks and not any(isinstance(cb, DatasetsCallback) for cb in callbacks)


def test_trial_runs_with_and_record_their_lane_threads(monkeypatch):
    """A trial's runs get the run setting ``threads`` = the worker's CPUs (what the run applies
    and records in its config and compute block), unless the study set ``threads`` itself."""
    import orchestrator.execution.worker as trial

    assert trial.lane_threads({"cpus_per_worker": 1.0}) == 1 and trial.lane_threads({"cpus_per_worker": 0.5}) == 1
    assert trial.lane_threads({"cpus_per_worker": 4}) == 4
    assert trial.with_threads({"task": "superglue/cb"}, 1) == {"task": "superglue/cb", "threads": 1}
    assert trial.with_threads({"task": "superglue/cb", "threads": 3}, 1)["threads"] == 3

    seen, reports = [], []

    def fake_train(cfg, **kwargs):
        seen.append(cfg.threads)
        return {"epochs_run": 1, "dev": {"primary": 0.5}, "config": cfg.resolved()}

    class Backbone:
        def copy(self):
            return self

    monkeypatch.setattr("ptcore.train.train", fake_train)
    monkeypatch.setattr(trial, "train_report", lambda local: lambda metrics, checkpoint=None: reports.append(metrics))
    monkeypatch.setattr(trial.PROCESS_CACHE, "backbone", lambda *args: Backbone())
    loop = {"threads": 1, "phase": "final"}
    trial._train_one(0, {"task": "superglue/cb", "method": "finetune"}, loop, None, True, False, None)
    trial._train_one(1, {"task": "superglue/cb", "method": "finetune", "threads": 2}, loop, None, True, False, None)
    assert seen == [1, 2]
    assert [json.loads(r["result_json"])["config"]["threads"] for r in reports] == [1, 2]
    import ray

    assert not ray.is_initialized(), "a run outside Ray started a local Ray (the next test's ray.init then fails)"
