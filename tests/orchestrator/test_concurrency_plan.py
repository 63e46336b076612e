"""``--dry-run`` says how many trials run at once: max_concurrent, capped by what the CPUs and
GPUs hold (a trial takes workers x cpus_per_worker CPUs and workers x gpus_per_worker GPUs);
fractional GPUs pack workers onto one GPU."""

from __future__ import annotations

from conftest import FIXTURES

from orchestrator.cli.study import concurrency_line
from orchestrator.study import load_study


def _ls(tmp_path, resources, ray=None, max_concurrent=8):
    raw = {
        "name": "plan", "backbones": [{"id": "bert-base-uncased", "layers": 2}], "tasks": ["superglue/cb"],
        "methods": [{"name": "ptuning_v2"}], "data_dir": str(FIXTURES), "output_dir": str(tmp_path / "out"),
        "budget": {"trials_per_cell": 1, "max_concurrent": max_concurrent}, "resources": resources, "ray": ray or {},
    }  # fmt: skip
    return load_study(raw=raw, cwd=tmp_path)


def test_local_cpus_cap_the_lanes(tmp_path):
    line = concurrency_line(_ls(tmp_path, {"workers_per_trial": 2, "cpus_per_worker": 1}, {"num_cpus": 6}))
    assert line.startswith("3 trial(s) (max_concurrent 8; this machine's 6 CPU)") and "a trial takes 2 CPU" in line
    line = concurrency_line(_ls(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 1}, {"num_cpus": 6}, max_concurrent=2))
    assert line.startswith("2 trial(s)")


def test_nothing_fits_says_so(tmp_path):
    line = concurrency_line(_ls(tmp_path, {"workers_per_trial": 4, "cpus_per_worker": 2}, {"num_cpus": 2}))
    assert line.startswith("0 trial(s)") and "nothing fits here" in line


def test_fractional_gpus_on_a_cluster(tmp_path):
    line = concurrency_line(_ls(tmp_path, {"workers_per_trial": 1, "cpus_per_worker": 2, "gpus_per_worker": 0.25}, {"address": "auto"}))
    assert line == "up to min(8 (max_concurrent), cluster CPUs / 2, cluster GPUs / 0.25); a trial takes 2 CPU and 0.25 GPU (4 workers share a GPU)"
