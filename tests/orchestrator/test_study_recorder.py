"""The driver-side Tune callback, without Ray: fake trials drive it through finished,
pruned, failed and interrupted runs; MLflow (SQLite) and results.csv must agree."""

from __future__ import annotations

import json

import pytest

from orch_study_helpers import FIXTURE_DATA, mlflow_runs
from orchestrator.execution.progress import Progress
from orchestrator.execution.recorder import Job, Recorder
from orchestrator.ledger.results import ResultsTable
from orchestrator.study import compose_run, load_study
from orchestrator.tracking.tracker import Tracker, flatten_config
from orchestrator.execution.trial import CELL_KEY, error_line, merge_params


class FakeTrial:
    def __init__(self, trial_id: str, config: dict, error: Exception | None = None):
        self.trial_id = trial_id
        self.config = config
        self._error = error

    def get_error(self):
        return self._error


def _result(dev: float, val: float, seed: int = 0, epochs: int = 2) -> dict:
    return {
        "task": "superglue/cb", "method": "ptuning_v2", "layers": 2, "seed": seed, "primary_metric": "accuracy",
        "dev": {"accuracy": dev, "macro_f1": dev / 2, "primary": dev}, "val": {"accuracy": val, "macro_f1": val / 2, "primary": val},
        "best_epoch": epochs, "epochs_run": epochs, "trainable_params": 10, "total_params": 100, "trainable_pct": 10.0,
        "checkpoint_bytes": 40, "train_examples": 8, "wall_s": 1.0, "train_s": 0.5, "history": [], "data_notes": ["dev = 10%"],
        "config": {"lr": 0.01, "seed": seed, "method_args": {"prompt_length": 4}}, "config_hash": "abc123",
        "versions": {"torch": "2.13.0"}, "git": {"commit": "deadbeef", "dirty": False},
    }  # fmt: skip


def _epoch(epoch: int, dev: float, run_index: int = 0, seed: int = 0) -> dict:
    return {"epoch": epoch, "run_index": run_index, "seed": seed, "final": 0, "train_loss": 1.0 / epoch, "lr": 0.01,
            "dev_accuracy": dev, "dev_primary": dev, "trainable_params": 10, "total_params": 100, "layers": 2,
            "node_id": "n1", "keep_score": dev, "training_iteration": epoch, "time_total_s": 1.0}  # fmt: skip


def _final(res: dict, run_index: int = 0, checkpoint: str | None = None) -> dict:
    out = {"final": 1, "run_index": run_index, "seed": res["seed"], "epoch": res["epochs_run"], "dev_primary": res["dev"]["primary"],
           "node_id": "n1", "keep_score": 1e9, "result_json": json.dumps(res)}  # fmt: skip
    if checkpoint:
        out["checkpoint_path"] = checkpoint
    return out


@pytest.fixture
def env(tmp_path):
    raw = {
        "name": "rec",
        "backbones": [{"id": "bert-base-uncased", "layers": 2, "label": "b"}],
        "tasks": ["superglue/cb"],
        "methods": [{"name": "ptuning_v2", "fixed": {"prompt_length": 4}, "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1}}}],
        "train": {"epochs": 2},
        "data_dir": str(FIXTURE_DATA),
        "output_dir": str(tmp_path / "out"),
    }
    ls = load_study(raw=raw, cwd=tmp_path)
    cell = ls.cells()[0]
    tracker = Tracker(ls.mlflow_uri, "rec", ls.output_dir / "mlartifacts")
    study_run = tracker.reuse_or_create("rec", {"ptcore.kind": "study"}, {})
    cell_run = tracker.reuse_or_create(cell.id, {"ptcore.kind": "cell", "ptcore.cell": cell.id}, {}, parent=study_run)
    results = ResultsTable(ls.output_dir / "results.csv")
    lines: list[str] = []
    common = dict(study=ls, tracker=tracker, results=results, progress=Progress(1, lines.append), common_tags={"ptcore.study": "rec"})
    return {"ls": ls, "cell": cell, "tracker": tracker, "cell_run": cell_run, "results": results, "common": common, "lines": lines}


def _runs(env) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in mlflow_runs(env["ls"].mlflow_uri, "rec"):
        if r.data.tags.get("ptcore.kind") == "run":
            out.setdefault(r.data.tags["ptcore.trial_id"], []).append(r)
    return out


def _search_recorder(env) -> Recorder:
    base = compose_run(env["ls"], env["cell"])

    def search_job(index: int, params: dict) -> Job:
        assert index == env["cell"].index
        return Job(env["cell"], env["cell_run"], [merge_params(base, params)], params)

    return Recorder(phase="search", search_job=search_job, epochs=2, **env["common"])


def test_search_trials_ok_pruned_failed(env):
    rec = _search_recorder(env)
    ok, pruned = FakeTrial("t_ok", {"lr": 0.01, CELL_KEY: 0}), FakeTrial("t_pruned", {"lr": 0.05, CELL_KEY: 0})
    bad = FakeTrial("t_bad", {"lr": 0.09, CELL_KEY: 0}, RuntimeError("Training failed\nptcore.errors.TrainingError: loss is nan at epoch 1"))
    for t in (ok, pruned, bad):
        rec.on_trial_start(0, [], t)
    rec.on_trial_result(0, [], ok, _epoch(1, 0.5))
    rec.on_trial_result(0, [], pruned, _epoch(1, 0.25))
    rec.on_trial_result(0, [], ok, _epoch(2, 0.75))
    rec.on_trial_complete(0, [], pruned)
    rec.on_trial_result(0, [], ok, _final(_result(0.75, 0.6)))
    rec.on_trial_complete(0, [], ok)
    rec.on_trial_error(0, [], bad)

    rows = {r["trial_id"]: r for r in env["results"].rows}
    assert rows["t_ok"]["status"] == "ok" and rows["t_ok"]["val_primary"] == 0.6 and rows["t_ok"]["val_macro_f1"] == 0.3
    assert rows["t_pruned"]["status"] == "pruned" and rows["t_pruned"]["dev_primary"] == 0.25 and rows["t_pruned"].get("val_primary") is None
    assert rows["t_pruned"]["best_epoch"] == 1 and rows["t_pruned"]["trainable_params"] == 10
    assert rows["t_bad"]["status"] == "error" and rows["t_bad"]["error"] == "ptcore.errors.TrainingError: loss is nan at epoch 1"
    assert json.loads(rows["t_ok"]["params_json"]) == {"lr": 0.01}
    # the table on disk says the same (atomic rewrite after every row)
    assert len(ResultsTable(env["results"].path).rows) == 3

    runs = _runs(env)
    status = {k: v[0].info.status for k, v in runs.items()}
    assert status == {"t_ok": "FINISHED", "t_pruned": "FINISHED", "t_bad": "FAILED"}
    assert runs["t_pruned"][0].data.tags["ptcore.status"] == "pruned"
    ok_run = runs["t_ok"][0]
    assert ok_run.data.params["lr"] == "0.01" and ok_run.data.params["prompt_length"] == "4"
    assert ok_run.data.tags["ptcore.git_commit"] == "deadbeef" and ok_run.data.tags["mlflow.parentRunId"] == env["cell_run"]
    cell = env["cell"]  # the leaf runs carry what one filters by in the UI
    assert (ok_run.data.tags["ptcore.task"], ok_run.data.tags["ptcore.method"], ok_run.data.tags["ptcore.backbone"]) == (
        cell.task, cell.method.display(), cell.backbone.display())
    hist = env["tracker"].client.get_metric_history(ok_run.info.run_id, "train_loss")
    assert [m.step for m in hist] == [1, 2]
    assert "val_primary" in ok_run.data.metrics and "trainable_pct" in ok_run.data.metrics
    assert ok_run.data.metrics["best_dev_primary"] == 0.75 and ok_run.data.metrics["val_macro_f1"] == 0.3
    dev_hist = env["tracker"].client.get_metric_history(ok_run.info.run_id, "dev_primary")
    assert [(m.step, m.value) for m in dev_hist] == [(1, 0.5), (2, 0.75)]  # per-epoch curve only
    assert any("t_bad error: ptcore.errors.TrainingError" in line for line in env["lines"])


def test_final_job_seed_failure_and_artifacts(env, tmp_path):
    ls, cell = env["ls"], env["cell"]
    runs = [compose_run(ls, cell, {"lr": 0.01}, seed=s) for s in (0, 1, 2)]
    job = Job(cell, env["cell_run"], runs, {"lr": 0.01}, source_trial="t_ok")
    done_cells = []
    rec = Recorder(phase="final", packs=[[job]], epochs=2, on_recorded=done_cells.append, **env["common"])
    ckpt = tmp_path / "ckpt"
    (ckpt / "checkpoint").mkdir(parents=True)
    (ckpt / "checkpoint" / "trainable.safetensors").write_bytes(b"weights")
    (ckpt / "checkpoint" / "run_config.json").write_text("{}")
    trial = FakeTrial("f_00000", {"job": 0}, ValueError("depth=5 is out of range for a 2-layer backbone (1..2)"))
    rec.on_trial_start(0, [], trial)
    rec.on_trial_result(0, [], trial, _epoch(1, 0.5, 0, 0))
    rec.on_trial_result(0, [], trial, _final(_result(0.5, 0.4, seed=0), 0, str(ckpt)))
    rec.on_trial_result(0, [], trial, _epoch(1, 0.5, 1, 1))
    rec.on_trial_error(0, [], trial)

    rows = env["results"].rows
    assert [(r["seed"], r["status"], r["source_trial"]) for r in rows] == [(0, "ok", "t_ok"), (1, "error", "t_ok")]
    assert rows[1]["error"].startswith("ValueError: depth=5")
    assert done_cells == [cell, cell]
    (runs_,) = _runs(env).values()
    by_seed = {r.data.tags["ptcore.seed"]: r for r in runs_}
    assert set(by_seed) == {"0", "1"}  # seed 2 never started: no run, no row (resume runs it)
    assert by_seed["0"].info.status == "FINISHED" and by_seed["1"].info.status == "FAILED"
    arts = {a.path for a in env["tracker"].client.list_artifacts(by_seed["0"].info.run_id, "checkpoint")}
    assert arts == {"checkpoint/trainable.safetensors", "checkpoint/run_config.json"}
    assert by_seed["0"].data.params["seed"] == "0" and by_seed["1"].data.params["seed"] == "1"


def test_final_pack_of_several_jobs(env):
    """A final trial packs jobs (here two configs of one cell): run_index counts across the
    pack, and each row carries its own job's params and source trial."""
    ls, cell = env["ls"], env["cell"]
    first = Job(cell, env["cell_run"], [compose_run(ls, cell, {"lr": 0.01}, seed=s) for s in (0, 1)], {"lr": 0.01}, source_trial="t1")
    second = Job(cell, env["cell_run"], [compose_run(ls, cell, {"lr": 0.02}, seed=2)], {"lr": 0.02}, source_trial="t2")
    rec = Recorder(phase="final", packs=[[first, second]], epochs=2, **env["common"])
    trial = FakeTrial("f_00000", {"job": 0})
    rec.on_trial_start(0, [], trial)
    for i, seed in enumerate((0, 1, 2)):
        rec.on_trial_result(0, [], trial, _epoch(1, 0.5, i, seed))
        rec.on_trial_result(0, [], trial, _final(_result(0.5, 0.4 + i / 10, seed=seed), i))
    rec.on_trial_complete(0, [], trial)
    rows = env["results"].rows
    assert [(r["run_index"], r["seed"], r["source_trial"], json.loads(r["params_json"])["lr"]) for r in rows] == [
        (0, 0, "t1", 0.01), (1, 1, "t1", 0.01), (2, 2, "t2", 0.02)]  # fmt: skip
    assert [r["val_primary"] for r in rows] == pytest.approx([0.4, 0.5, 0.6])
    (runs_,) = _runs(env).values()
    assert sorted(r.data.tags["ptcore.source_trial"] for r in runs_) == ["t1", "t1", "t2"]
    assert {r.info.status for r in runs_} == {"FINISHED"}


def test_abort_kills_open_runs_and_resume_closes_stale(env):
    rec = _search_recorder(env)
    a, b = FakeTrial("a", {"lr": 0.01, CELL_KEY: 0}), FakeTrial("b", {"lr": 0.02, CELL_KEY: 0})
    rec.on_trial_start(0, [], a)
    rec.on_trial_start(0, [], b)
    rec.on_trial_result(0, [], a, _epoch(1, 0.5))
    rec.abort()
    assert {k: v[0].info.status for k, v in _runs(env).items()} == {"a": "KILLED", "b": "KILLED"}
    assert env["results"].rows == []
    # kill -9 leaves runs RUNNING: close_stale ends them (FINISHED if results.csv has their row)
    t = env["tracker"]
    r1 = t.start_run("x", env["cell_run"], {"ptcore.kind": "run", "ptcore.trial_id": "x", "ptcore.run_index": "0"}, {})
    r2 = t.start_run("y", env["cell_run"], {"ptcore.kind": "run", "ptcore.trial_id": "y", "ptcore.run_index": "0"}, {})
    assert t.close_stale({("x", "0")}) == 4  # x, y + the study and cell runs
    assert t.client.get_run(r1).info.status == "FINISHED" and t.client.get_run(r2).info.status == "KILLED"


def test_flatten_config_and_error_line():
    flat = flatten_config({"lr": 0.01, "layers": None, "method_args": {"depth": [1, 2], "prompt_length": 4, "lr": 0.5}})
    # method options by their own names, as in the study file; one named like a run setting keeps a prefix
    assert flat == {"layers": "None", "lr": "0.01", "depth": "[1, 2]", "prompt_length": "4", "method.lr": "0.5"}
    try:
        try:
            raise ValueError("inner problem")
        except ValueError as inner:
            raise RuntimeError("Training failed with 1 worker error") from inner
    except RuntimeError as e:
        assert error_line(e) == "RuntimeError: Training failed with 1 worker error" or "inner problem" in error_line(e)
    assert error_line(None) == "unknown error"


def test_results_table_roundtrip(tmp_path):
    t = ResultsTable(tmp_path / "r.csv")
    t.add({"study": "s", "cell": "c", "phase": "search", "trial_id": "01234567", "run_index": 0, "seed": 0, "status": "ok",
           "dev_primary": 0.5, "val_accuracy": 0.25})  # fmt: skip
    t.add({"study": "s", "cell": "c", "phase": "search", "trial_id": "b", "run_index": 0, "seed": 0, "status": "error", "error": "x"})
    back = ResultsTable(tmp_path / "r.csv")
    assert back.rows[0]["trial_id"] == "01234567" and back.rows[0]["dev_primary"] == 0.5 and back.rows[0]["val_accuracy"] == 0.25
    assert back.done_keys() == {("01234567", "0"), ("b", "0")}
    assert back.drop(status="error") == 1 and len(ResultsTable(tmp_path / "r.csv").rows) == 1
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["study", "cell", "backbone"] and header[-1] == "val_accuracy"


def test_checkpoint_over_the_size_limit_is_not_logged(env, tmp_path):
    """``tracking.max_checkpoint_mb``: a final run's weights above it stay out of MLflow (a tag
    says so, result.json is still logged); below it they are logged."""
    ls, cell = env["ls"], env["cell"]
    ls.study.tracking.max_checkpoint_mb = 1e-4  # 100 bytes
    job = Job(cell, env["cell_run"], [compose_run(ls, cell, {"lr": 0.01}, seed=s) for s in (0, 1)], {"lr": 0.01}, source_trial="t")
    rec = Recorder(phase="final", packs=[[job]], epochs=2, **env["common"])
    ckpt = tmp_path / "ckpt"
    (ckpt / "checkpoint").mkdir(parents=True)
    (ckpt / "checkpoint" / "trainable.safetensors").write_bytes(b"weights")
    (ckpt / "checkpoint" / "run_config.json").write_text("{}")
    trial = FakeTrial("f_00000", {"job": 0})
    rec.on_trial_start(0, [], trial)
    big, small = _result(0.5, 0.4, seed=0), _result(0.5, 0.4, seed=1)
    big["checkpoint_bytes"], small["checkpoint_bytes"] = 90_000_000, 40
    rec.on_trial_result(0, [], trial, _final(big, 0, str(ckpt)))
    rec.on_trial_result(0, [], trial, _final(small, 1, str(ckpt)))
    by_seed = {r.data.tags["ptcore.seed"]: r for r in _runs(env)["f_00000"]}
    client = env["tracker"].client
    assert by_seed["0"].data.tags["ptcore.checkpoint"] == "not logged: 90.0 MB > tracking.max_checkpoint_mb 0.0001"
    assert [a.path for a in client.list_artifacts(by_seed["0"].info.run_id)] == ["result.json"]
    assert "ptcore.checkpoint" not in by_seed["1"].data.tags
    assert {a.path for a in client.list_artifacts(by_seed["1"].info.run_id, "checkpoint")} == {"checkpoint/trainable.safetensors", "checkpoint/run_config.json"}


def test_an_epoch_reported_again_by_a_retried_process_is_logged_once(env):
    """A retried trial process re-delivers the report it continues from (and a Ray Train
    worker group may redo an epoch whose report was lost): each epoch is logged once."""
    rec = _search_recorder(env)
    t = FakeTrial("t_retry", {"lr": 0.01, CELL_KEY: 0})
    rec.on_trial_start(0, [], t)
    for epoch, dev in ((1, 0.5), (2, 0.6), (2, 0.6), (1, 0.5), (3, 0.7)):
        rec.on_trial_result(0, [], t, _epoch(epoch, dev))
    (run,) = _runs(env)["t_retry"]
    steps = [m.step for m in env["tracker"].client.get_metric_history(run.info.run_id, "dev_primary")]
    assert steps == [1, 2, 3]
    assert [h["epoch"] for h in rec.trials["t_retry"].runs[0].history] == [1, 2, 3]


def test_run_params_say_the_threads_and_compute_it_ran_with(env):
    """A leaf run's params: ``threads`` as the trial runs it (the study's cpus_per_worker, 1
    here) from the start, and at its end result.json's ``compute`` block as ``compute.*``."""
    ls, cell = env["ls"], env["cell"]
    job = Job(cell, env["cell_run"], [compose_run(ls, cell, {"lr": 0.01}, seed=0)], {"lr": 0.01}, source_trial="t")
    rec = Recorder(phase="final", packs=[[job]], epochs=2, **env["common"])
    trial = FakeTrial("f_00000", {"job": 0})
    rec.on_trial_start(0, [], trial)
    res = _result(0.5, 0.4)
    res["compute"] = {"torch_threads": 1, "interop_threads": 2, "kernels": "fast", "attention": "ptcore", "device": "cpu",
                      "gpu": None, "precision": "fp32", "torch": "2.13.0+cpu", "cpu_capability": "AVX2",
                      "matmul_precision": "highest"}  # fmt: skip
    rec.on_trial_result(0, [], trial, _final(res))
    (run,) = _runs(env)["f_00000"]
    params = run.data.params
    assert params["threads"] == "1"
    assert {k: v for k, v in params.items() if k.startswith("compute.")} == {
        "compute.torch_threads": "1", "compute.interop_threads": "2", "compute.kernels": "fast", "compute.attention": "ptcore",
        "compute.device": "cpu", "compute.precision": "fp32", "compute.torch": "2.13.0+cpu", "compute.cpu_capability": "AVX2",
        "compute.matmul_precision": "highest"}  # fmt: skip (gpu: None on the CPU, left out)


def test_threads_param_only_where_set():
    """A cell's selection (no threads) logs no ``threads``, so its params stay a subset of its
    final runs' (which ran with the trial's threads)."""
    assert "threads" not in flatten_config({"lr": 0.01, "threads": None, "method_args": {}})
    assert flatten_config({"lr": 0.01, "threads": 1, "method_args": {}})["threads"] == "1"


def test_a_trial_out_of_memory_reads_so_in_its_row(env):
    """A trial the OOM killer ended (Ray's account of the dead worker names the reason) or that
    raised MemoryError: its row's error is one line that says out of memory and what to do."""
    rec = _search_recorder(env)
    killed = ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
              "Worker exit detail: Task was killed due to the node running low on memory (OOM); killed by SIGKILL")
    trials = [FakeTrial("t_oom", {CELL_KEY: env["cell"].index, "lr": 0.01}, killed),
              FakeTrial("t_mem", {CELL_KEY: env["cell"].index, "lr": 0.02}, MemoryError("cannot allocate 4.0 GiB"))]
    for t in trials:
        rec.on_trial_start(0, [], t)
        rec.on_trial_result(0, [], t, _epoch(1, 0.5))
        rec.on_trial_error(0, [], t)
    rows = {r["trial_id"]: r for r in env["results"].rows}
    for tid in ("t_oom", "t_mem"):
        assert rows[tid]["status"] == "error" and rows[tid]["error"].startswith("out of memory: ")
        assert "\n" not in rows[tid]["error"] and "batch_size" in rows[tid]["error"]
    assert "OOM" in rows["t_oom"]["error"] and "MemoryError" in rows["t_mem"]["error"]


def test_a_trial_that_fills_the_disk_stops_the_study_with_no_row(env):
    """ENOSPC in a trial (its checkpoint could not be written): every later trial would fail the
    same way, so the callback raises DiskFull (exit 3) after ending the trial's runs KILLED, and
    writes no row: --resume runs it again once there is space."""
    from orchestrator.common.faults import EXIT_RESUMABLE, DiskFull

    rec = _search_recorder(env)
    trial = FakeTrial("t_full", {CELL_KEY: env["cell"].index, "lr": 0.01},
                      "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device: '/data/out/ray/x/checkpoint_000001'")
    rec.on_trial_start(0, [], trial)
    rec.on_trial_result(0, [], trial, _epoch(1, 0.5))
    with pytest.raises(DiskFull) as e:
        rec.on_trial_error(0, [], trial)
    assert e.value.exit_code == EXIT_RESUMABLE and "/data/out/ray/x/checkpoint_000001" in e.value.line()
    assert "--resume" in e.value.line() and "\n" not in e.value.line()
    assert env["results"].rows == []
    assert [r.info.status for r in _runs(env)["t_full"]] == ["KILLED"]
