"""Local-mode trials: training inside reused Tune trial processes (Ray Train V2 local mode).

The property that matters: a trial process is reused for the next trial even after the
scheduler stopped its trial mid-run (Ray 2.60 leaves the next trial PENDING for ever when
that reuse fails), every epoch's report reaches Tune, and one process serves all trials.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

pytest.importorskip("ray.train")

from orch_study_helpers import tiny_bert, tiny_study  # noqa: E402,F401  (tiny_bert: fixture)
from orchestrator.execution.trial import CELL_KEY, persist_checkpoint, runs_locally  # noqa: E402


def test_runs_locally_for_single_worker_cpu_trials():
    cpu = {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}
    gpu = {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}
    assert runs_locally(cpu) and not runs_locally(gpu)
    assert not runs_locally(cpu, "worker_group") and runs_locally(gpu, "local")


def test_persist_checkpoint_moves_the_directory(tmp_path):
    src = tmp_path / "tmpckpt"
    (src / "checkpoint").mkdir(parents=True)
    (src / "checkpoint" / "trainable.safetensors").write_bytes(b"x")
    dest = persist_checkpoint(str(src), str(tmp_path / "storage"), "study__final-a1__p000__abc", 3)
    assert dest == str(tmp_path / "storage" / "study__final-a1__p000__abc" / "checkpoint_000003")
    assert (tmp_path / "storage" / "study__final-a1__p000__abc" / "checkpoint_000003" / "checkpoint" / "trainable.safetensors").is_file()
    assert not src.exists()


@pytest.fixture
def local_ray():
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_reused_trial_process_after_stopped_trials(tiny_bert, tmp_path, local_ray):  # noqa: F811
    """Four trials through one reused process, each stopped by the scheduler after its
    first epoch (the case that hung with reuse before local mode)."""
    import ray.tune
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from orchestrator.execution.runner import StudyRunner
    from orchestrator.study import compose_run, load_study

    raw = tiny_study(tiny_bert, tmp_path / "out", tasks=["superglue/cb"], train={"epochs": 4, "batch_size": 4, "max_length": 48})
    ls = load_study(raw=raw, cwd=tmp_path)
    runner = StudyRunner(ls)
    assert runner._local_trials()
    spec = dataclasses.replace(runner._spec("search"), cells={0: {"base": compose_run(ls, ls.cells()[0]), "run_prefix": "t__cb__search-a1"}})

    class StopAtFirstEpoch(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            return TrialScheduler.STOP

    tuner = ray.tune.Tuner(
        runner._trainable(spec),
        param_space={CELL_KEY: 0, "lr": ray.tune.grid_search([1e-3, 2e-3, 3e-3, 4e-3])},
        tune_config=ray.tune.TuneConfig(
            scheduler=StopAtFirstEpoch(), max_concurrent_trials=1, reuse_actors=True,
            time_budget_s=120,  # a hung reuse ends here, and the asserts below fail
        ),
        run_config=ray.tune.RunConfig(name="reuse", storage_path=str(tmp_path / "ray"), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 4
    epochs = [r.metrics.get("epoch") for r in results]
    assert epochs == [1, 1, 1, 1], epochs  # each stopped after its first report, none ran on
    assert all(r.error is None for r in results)
    pids = {r.metrics["pid"] for r in results}
    assert len(pids) == 1, f"expected one reused trial process, got {pids}"
    assert all(r.metrics.get("dev_primary") is not None for r in results)


@pytest.mark.slow
def test_worker_group_trials_still_run_a_study(tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    """``ray.trial_mode: worker_group`` (what GPU and multi-worker trials use): the same
    study through full Ray Train worker groups lands the same rows."""
    import pandas as pd

    from orch_study_helpers import write_study
    from orchestrator.cli.app import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    raw = tiny_study(tiny_bert, out, ray={"num_cpus": 2, "trial_mode": "worker_group"})
    assert main(["study", str(write_study(tmp_path / "wg.yaml", raw))]) == 0
    df = pd.read_csv(out / "results.csv", dtype={"trial_id": str, "source_trial": str})
    assert len(df) == 8 and set(df.status) <= {"ok", "pruned"}
    final = df[df.phase == "final"]
    assert len(final) == 4 and final.val_primary.notna().all()
    search = df[df.phase == "search"]
    assert search.val_primary.isna().all()  # search runs are scored on dev only
