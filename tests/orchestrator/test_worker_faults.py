"""Worker faults in a real study: the process that trains a trial is killed (SIGKILL) right
after it reported an epoch, and ``ray.max_failures: 1`` retries it from that epoch's
checkpoint. Both ways a trial trains are covered: a Ray Train worker group (Ray Train's
FailureConfig restarts the worker) and local mode (the Tune trial process trains; Tune's
FailureConfig restarts the trial).

Two kills per study (``orchestrator.common.failpoints``): the search trial's run after epoch 1, and
the final trial, which trains seeds 0 and 1 one after the other, in seed 1's run after epoch 2
(seed 0 is finished by then and must not train again). Observed afterwards: the study exits 0;
every run has epochs 1, 2, 3 in MLflow exactly once; the killed runs say where they were
continued (``ptcore.resumed_at``); results.csv has each run once, with all three epochs.
That a continued run ends exactly where an uninterrupted one would is
``tests/core/test_trainstate.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orch_study_helpers import IDS, mlflow_runs, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)

EPOCHS = 3
KILLS = {"worker.search.run0.epoch1": ("search", "0", "1"), "worker.final.run1.epoch2": ("final", "1", "2")}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["worker_group", "local"])
def test_killed_worker_is_retried_from_its_last_epoch(tiny_bert, tmp_path, mode):  # noqa: F811
    import pandas as pd
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    raw = tiny_study(
        tiny_bert, out, name="faults", tasks=["superglue/cb"],
        train={"epochs": EPOCHS, "batch_size": 4, "max_length": 48},
        budget={"trials_per_cell": 1, "max_concurrent": 1},
        final={"seeds": [0, 1], "runs_per_trial": 2},
        ray={"num_cpus": 2, "trial_mode": mode, "max_failures": 1},
    )  # fmt: skip
    path = write_study(tmp_path / "faults.yaml", raw)
    env = {**os.environ, "PTCORE_FAILPOINTS": ",".join(KILLS), "PTCORE_FAILPOINTS_DIR": str(tmp_path / "fired")}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "study", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, log
    assert {p.name for p in (tmp_path / "fired").iterdir()} == {f"{k}.fired" for k in KILLS}, log  # both kills happened

    df = pd.read_csv(out / "results.csv", dtype=IDS)
    assert len(df) == 3 and set(df.status) == {"ok"} and not df.duplicated(["trial_id", "run_index"]).any()
    assert (df.epochs_run == EPOCHS).all()
    assert sorted(df[df.phase == "final"].seed) == [0, 1]

    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = [r for r in mlflow_runs(uri, "faults") if r.data.tags.get("ptcore.kind") == "run"]
    assert not [r for r in runs if r.info.status != "FINISHED"], [(r.info.run_name, r.info.status) for r in runs]
    assert {r.info.run_id for r in runs} == set(df.mlflow_run_id)  # one run each: the retry continued it
    resumed = {}
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "dev_primary")]
        assert steps == list(range(1, EPOCHS + 1)), (r.info.run_name, steps)  # none repeated, none missing
        losses = [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")]
        assert losses == list(range(1, EPOCHS + 1)), (r.info.run_name, losses)
        t = r.data.tags
        if "ptcore.resumed_at" in t:
            resumed[(t["ptcore.phase"], t["ptcore.run_index"])] = t["ptcore.resumed_at"]
    expected = {(phase, i): epoch for phase, i, epoch in KILLS.values()}
    if mode == "local":
        assert resumed == expected, resumed  # continued after the very epoch it was killed at
    else:
        # Ray Train registers a report when its controller next polls the worker: a worker killed
        # the instant it reported may lose that report, and the retry redoes that epoch from the
        # checkpoint before it (from scratch before epoch 1). Either way each epoch is logged once.
        for key, epoch in expected.items():
            assert resumed.get(key, "0") in {epoch, str(int(epoch) - 1)}, resumed
        assert resumed, "no run continued from a checkpoint"
    assert "retrying" in done.stdout or mode == "worker_group"  # Tune retried the trial (local mode)
