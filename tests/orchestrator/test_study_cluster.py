"""Multi-node: a two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, one
CPU per node), a one-cell study run against its address; the two concurrent search trials
must land on different nodes, and the study must finish as on a local Ray."""

from __future__ import annotations

import pandas as pd
import pytest

from orch_study_helpers import mlflow_runs, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)

IDS = {"trial_id": str, "source_trial": str}  # ids like 01234567 stay strings


@pytest.mark.slow
def test_study_on_two_node_cluster(tiny_bert, tmp_path, monkeypatch):  # noqa: F811
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.execution.runner import run_study
    from orchestrator.study import load_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        raw = tiny_study(
            tiny_bert, out,
            tasks=["superglue/cb"],
            final={"seeds": [0, 1], "runs_per_trial": 1},
            ray={"address": cluster.address, "storage_path": str(tmp_path / "shared")},
        )  # fmt: skip
        ls = load_study(write_study(tmp_path / "cluster.yaml", raw))
        summary = run_study(ls)
        assert [s["done"] for s in summary] == [True]
        assert not ray.is_initialized()  # the driver disconnected; the cluster lives on
        df = pd.read_csv(out / "results.csv", dtype=IDS)
        assert len(df) == 4
        assert df.node_id.notna().all()
        search = df[df.phase == "search"]
        assert search.node_id.nunique() == 2, search[["trial_id", "node_id"]]
        final = df[df.phase == "final"]
        assert final.node_id.nunique() == 2  # one trial per seed, both nodes busy
        assert list((tmp_path / "shared").iterdir())  # checkpoints went to the configured storage
        runs = mlflow_runs(ls.mlflow_uri, "tiny")
        assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 1 + 1 + 4
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
