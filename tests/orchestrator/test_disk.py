"""The output directory holds only what it needs: a trial's Ray Train run (its checkpoints)
is deleted when the trial ends, every invocation sweeps what is left, and nothing else in the
storage is touched; the size report by part. No Ray here (the tiny e2e study checks it live:
tests/orchestrator/test_study_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch_study_helpers import FIXTURE_DATA
from orchestrator.ledger.disk import prune_train_runs, usage, usage_line
from orchestrator.execution.progress import Progress
from orchestrator.execution.recorder import Job, Recorder
from orchestrator.study import load_study
from orchestrator.execution.trial import CELL_KEY


class FakeTrial:
    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config = trial_id, config

    def get_error(self):
        return RuntimeError("boom")


def _study(tmp_path, **ray):
    raw = {
        "name": "disk",
        "backbones": [{"id": "bert-base-uncased", "layers": 2, "label": "b"}],
        "tasks": ["superglue/cb", "superglue/rte"],
        "methods": [{"name": "ptuning_v2", "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}}],
        "data_dir": str(FIXTURE_DATA),
        "output_dir": str(tmp_path / "out"),
        "ray": ray,
    }
    return load_study(raw=raw, cwd=tmp_path)


def _train_run(root: Path, name: str, files: int = 2) -> Path:
    d = root / name
    for k in range(files):
        ckpt = d / f"checkpoint_{k:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainable.safetensors").write_bytes(b"\0" * 1000)
        (ckpt / "run_config.json").write_text("{}")
    return d


def _layout(ls) -> dict[str, Path]:
    """A storage as a study leaves it mid-way: Train runs of two search trials (two attempts),
    of a final pack, Tune's experiment dirs, and another study's runs beside them."""
    root = Path(ls.storage_path)
    cb, rte = (c.id for c in ls.cells())
    dirs = {
        "search_t1": _train_run(root, f"disk__{cb}__search-a1__t1"),
        "search_t2": _train_run(root, f"disk__{rte}__search-a2__t2"),
        "final_t3": _train_run(root, "disk__final-a1__p000__t3_00000"),
        "other_study": _train_run(root, f"diskette__{cb}__search-a1__t1"),
        "other_study_final": _train_run(root, "disk2__final-a1__p000__t3_00000"),
        "prefixed_study": _train_run(root, f"disk__x__{cb}__search-a1__t1"),  # study 'disk__x' sharing the storage
        "prefixed_study_final": _train_run(root, "disk__x__final-a1__p000__t3_00000"),
    }
    for tune in ("disk__search-a1", "disk__final-a1"):
        (root / tune / "trial_fn_t1").mkdir(parents=True)
        (root / tune / "experiment_state-x.json").write_text("{}")
        (root / tune / "trial_fn_t1" / "error.txt").write_text("Traceback ...")
        dirs[tune] = root / tune
    return dirs


class Sink:
    """Tracker and results table stand-in: the Recorder's MLflow/ledger calls go nowhere."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: "run-id"


def _recorder(ls, phase: str) -> Recorder:
    cell = ls.cells()[0]
    lines: list[str] = []
    job = Job(cell, "cell-run", [{}], {})
    return Recorder(study=ls, phase=phase, tracker=Sink(), results=Sink(), progress=Progress(2, lines.append), common_tags={},
                    storage_path=ls.storage_path, search_job=lambda index, params: job, packs=[[job]])


def test_an_ended_trial_loses_its_train_run_and_nothing_else(tmp_path):
    ls = _study(tmp_path)
    dirs = _layout(ls)
    rec = _recorder(ls, "search")
    rec.on_trial_complete(0, [], FakeTrial("t1", {CELL_KEY: 0, "lr": 0.01}))
    gone = {k for k, d in dirs.items() if not d.exists()}
    assert gone == {"search_t1"}
    final = _recorder(ls, "final")
    final.on_trial_error(0, [], FakeTrial("t3_00000", {"job": 0}))  # a failed final trial too
    gone = {k for k, d in dirs.items() if not d.exists()}
    assert gone == {"search_t1", "final_t3"}
    assert (dirs["disk__search-a1"] / "trial_fn_t1" / "error.txt").is_file()  # Tune's record stays


def test_sweep_takes_every_attempt_of_the_study_only(tmp_path):
    ls = _study(tmp_path)
    dirs = _layout(ls)
    freed = prune_train_runs(ls)
    gone = {k for k, d in dirs.items() if not d.exists()}
    assert gone == {"search_t1", "search_t2", "final_t3"}
    assert freed == 3 * 2 * (1000 + 2)
    assert prune_train_runs(ls) == 0


def test_keep_train_checkpoints_keeps_them(tmp_path):
    ls = _study(tmp_path, keep_train_checkpoints=True)
    dirs = _layout(ls)
    _recorder(ls, "search").on_trial_complete(0, [], FakeTrial("t1", {CELL_KEY: 0, "lr": 0.01}))
    assert prune_train_runs(ls) == 0 and all(d.exists() for d in dirs.values())


def test_usage_by_part(tmp_path):
    out = tmp_path / "out"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "a.features.json").write_bytes(b"x" * 2_500_000)
    (out / "ray" / "disk__search-a1").mkdir(parents=True)
    (out / "ray" / "disk__search-a1" / "experiment_state.json").write_bytes(b"x" * 1500)
    (out / "mlflow.db").write_bytes(b"x" * 40_000)
    (out / "plan.json").write_bytes(b"x" * 10)
    (out / "study.yaml").write_bytes(b"x" * 20)
    assert usage(out) == {"cache": 2_500_000, "ray": 1500, "mlflow.db": 40_000, "other": 30}
    assert usage_line(out) == f"output dir {out}: 2.5 MB (cache 2.5 MB, mlflow.db 40.0 KB, ray 1.5 KB, other 30 B)"
    elsewhere = tmp_path / "shared-ray"
    (elsewhere / "x").mkdir(parents=True)
    (elsewhere / "x" / "f").write_bytes(b"x" * 3000)
    assert usage_line(out, str(elsewhere)).endswith(f"; Ray storage {elsewhere}: 3.0 KB")
    assert usage_line(out, str(out / "ray")) == usage_line(out)


@pytest.mark.parametrize("name", ["disk__search-a1", "disk__final-a3"])
def test_tune_experiment_dirs_are_never_train_runs(tmp_path, name):
    ls = _study(tmp_path)
    (Path(ls.storage_path) / name).mkdir(parents=True)
    assert prune_train_runs(ls) == 0 and (Path(ls.storage_path) / name).is_dir()
