"""A data-parallel trial inside a real study: ``resources.workers_per_trial: 2`` trains each
trial on a Ray Train worker group of 2 (gloo on the CPU, ``ptcore.distributed``). The results
table and MLflow show one run per ptcore run, not one per worker; the row says 2 workers and
the gradient bytes synced per step (the prompts and the head, not the backbone)."""

from __future__ import annotations

import pytest

from orch_study_helpers import IDS, mlflow_runs, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)


@pytest.mark.slow
def test_two_worker_trials_in_a_study(tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    import pandas as pd

    from orchestrator.cli.app import main

    out = tmp_path / "out"
    raw = tiny_study(
        tiny_bert, out, name="ddp", tasks=["superglue/cb"],
        budget={"trials_per_cell": 1, "max_concurrent": 1},
        final={"seeds": [0]},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    )  # fmt: skip
    path = write_study(tmp_path / "ddp.yaml", raw)
    monkeypatch.chdir(tmp_path)
    assert main(["study", str(path)]) == 0
    df = pd.read_csv(out / "results.csv", dtype=IDS)
    assert len(df) == 2 and set(df.status) == {"ok"} and set(df.phase) == {"search", "final"}
    assert (df.workers == 2).all()
    # what two workers sync each step: the trainable parameters (+ loss and a flag), fp32
    assert (df.sync_bytes_per_step == (df.trainable_params + 2) * 4).all()
    assert (df.sync_bytes_per_step < df.total_params * 4 / 20).all()  # kilobytes, not the backbone
    runs = [r for r in mlflow_runs(f"sqlite:///{out / 'mlflow.db'}", "ddp") if r.data.tags.get("ptcore.kind") == "run"]
    assert len(runs) == 2 and {r.info.run_id for r in runs} == set(df.mlflow_run_id)
    assert all(r.info.status == "FINISHED" for r in runs)
