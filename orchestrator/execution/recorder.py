"""Driver-side Tune callback: every trial event -> MLflow run + results.csv row + progress line.

Runs in the driver process (Tune calls callbacks from its event loop), so MLflow is written
by one process through one :class:`~orchestrator.tracking.tracker.Tracker`. One *run* is one ptcore
training run: a search trial has one, a final trial one per seed it trains.

* trial start      -> MLflow run of its first ptcore run (params = resolved config, tags)
* epoch result     -> metrics at step = epoch (train_loss, lr_schedule, dev_*, method aux like tau)
* final result     -> val/test metrics; what describes the run (param counts, best epoch) and
                      what decided its arithmetic (compute.*) as params; checkpoint artifact
                      (final phase); results.csv row (status ok) written first, then the run
                      ends FINISHED
* trial complete   -> runs that never sent a final result were stopped by ASHA: row
                      status pruned (dev only), run FINISHED with tag ptcore.status=pruned
* trial error      -> row status error + one-line reason, run FAILED
* trial ended      -> its Ray Train run (checkpoints) deleted from the Ray storage: nothing
                      reads it now (final checkpoints are MLflow artifacts; see orchestrator.ledger.disk)
* interrupted      -> :meth:`abort`: every open run ends KILLED (no row: resume re-runs it)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ray.tune import Callback

from ptcore.config import make_run_config
from ptcore.errors import PtcoreError

from orchestrator.common import failpoints
from orchestrator.common.faults import disk_full_in_text
from orchestrator.ledger import results as R
from orchestrator.ledger.disk import prune_train_runs
from orchestrator.ledger.results import ERROR, FINAL
from orchestrator.execution.raysession import check_interrupt
from orchestrator.tracking.tracker import (
    KIND, PHASE, RUN_INDEX, SEED, TRIAL, cell_tags, cell_title, compute_params, data_inputs, flatten_config, provenance_tags,
)  # fmt: skip
from orchestrator.execution.trial import BOOKKEEPING, CELL_KEY, error_line, searched_values, trial_error
from orchestrator.execution.worker import lane_threads, with_threads


@dataclass
class RunState:
    index: int  # position in the trial (the worker's run_index)
    values: dict[str, Any]
    job: "Job"
    mlflow_id: Optional[str] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    resolved: Optional[dict[str, Any]] = None
    config_hash: Optional[str] = None
    node_id: str = ""
    started: float = 0.0  # when its MLflow run opened (wall_s of runs without a final report)


@dataclass
class Job:
    """Runs of one cell; a trial trains one or more jobs, one run after another."""

    cell: Any  # orchestrator.study.Cell
    cell_run: str  # the cell's MLflow run (parent of the job's runs)
    runs: list[dict[str, Any]]  # raw RunConfig values, one per run
    params: dict[str, Any]  # searched values (search) / the selected best values (final)
    source_trial: Optional[str] = None  # final: the search trial whose config this re-runs


@dataclass
class TrialState:
    trial_id: str
    runs: dict[int, RunState]


def trial_runs(jobs: list[Job]) -> list[tuple[Job, dict[str, Any]]]:
    """A trial's runs in the order its worker trains them: (job, raw RunConfig values)."""
    return [(job, values) for job in jobs for values in job.runs]


def resolve_values(values: dict[str, Any]) -> tuple[Optional[dict], Optional[str]]:
    """The resolved config + hash the worker will compute (same ptcore code), for params."""
    try:
        cfg = make_run_config(values)
        return cfg.resolved(), cfg.config_hash()
    except PtcoreError:
        return None, None


def fetch_checkpoint(path: str, storage_path: str) -> tuple[str, bool]:
    """A local directory holding the checkpoint at ``path`` (downloaded if storage is remote)."""
    if os.path.isdir(path):
        return path, False
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
    local = tempfile.mkdtemp(prefix="ptcore-ckpt-")
    pyarrow.fs.copy_files(path, local, source_filesystem=fs)
    return local, True


class Recorder(Callback):
    """``phase=SEARCH``: a trial's config holds a cell's searched values and the cell's
    index (``search.CELL_KEY``); ``search_job(index, params)`` makes its :class:`Job`.
    ``phase=FINAL``: ``packs``; a trial's config is ``{"job": k}`` and it trains the
    jobs of ``packs[k]`` one run after another."""

    def __init__(self, *, study, phase: str, tracker, results, progress, common_tags: dict[str, str], storage_path: str = "",
                 git: Optional[dict] = None, epochs: Optional[int] = None,
                 search_job: Optional[Callable[[int, dict], Job]] = None, packs: Optional[list[list[Job]]] = None,
                 on_recorded: Optional[Callable[[Any], None]] = None):
        self.ls = study
        self.phase = phase
        self.tracker = tracker
        self.results = results
        self.progress = progress
        self.common_tags = common_tags
        self.storage_path = storage_path
        self.git = git or {}
        self.epochs = epochs
        self.search_job = search_job
        self.packs = packs or []
        self.on_recorded = on_recorded
        self.trials: dict[str, TrialState] = {}
        self.errors = 0
        self.finished = 0

    # ------------------------------------------------------------------ helpers

    def _trial(self, trial) -> TrialState:
        ts = self.trials.get(trial.trial_id)
        if ts is None:
            if self.phase == FINAL:
                jobs = self.packs[int(trial.config["job"])]
            else:
                jobs = [self.search_job(int(trial.config[CELL_KEY]), searched_values(trial.config))]
            # the threads the worker runs each run with (orchestrator.execution.trial), so the params say what ran
            threads = lane_threads(self.ls.study.resources.model_dump())
            ts = TrialState(trial.trial_id, {i: RunState(i, with_threads(v, threads), job)
                                             for i, (job, v) in enumerate(trial_runs(jobs))})
            self.trials[trial.trial_id] = ts
        return ts

    def _open(self, ts: TrialState, rs: RunState) -> str:
        if rs.mlflow_id is None:
            rs.resolved, rs.config_hash = resolve_values(rs.values)
            seed = rs.values.get("seed", 0)
            name = f"{cell_title(rs.job.cell)} · " + (f"seed {seed}" if self.phase == FINAL else f"trial {ts.trial_id}")
            tags = {
                **self.common_tags,
                KIND: "run",
                **cell_tags(rs.job.cell),  # what a filter in the MLflow UI asks for, on the leaf runs too
                PHASE: self.phase,
                TRIAL: ts.trial_id,
                RUN_INDEX: str(rs.index),
                SEED: str(seed),
                "ptcore.config_hash": str(rs.config_hash),
                "ptcore.status": "running",
            }
            if rs.job.source_trial:
                tags["ptcore.source_trial"] = rs.job.source_trial
            params = flatten_config(rs.resolved) if rs.resolved else {k: str(v) for k, v in rs.values.items()}
            rs.mlflow_id = self.tracker.start_run(name, rs.job.cell_run, tags, params)
            self.tracker.log_inputs(rs.mlflow_id, data_inputs(rs.job.cell.task, self.ls.data_dir))  # the files, with digests
            rs.started = time.time()
        return rs.mlflow_id

    def _row(self, ts: TrialState, rs: RunState) -> dict[str, Any]:
        row = R.base_row(self.ls.name, rs.job.cell, self.phase, ts.trial_id, rs.index, rs.values.get("seed", 0))
        row["params_json"] = json.dumps(rs.job.params, sort_keys=True, default=str)
        row["source_trial"] = rs.job.source_trial
        row["mlflow_run_id"] = rs.mlflow_id
        row["node_id"] = rs.node_id
        return row

    def _progress_what(self, ts: TrialState, rs: RunState, epoch: Any) -> str:
        total = rs.values.get("epochs") or self.epochs or "?"
        if self.phase == FINAL:
            return f"{rs.job.cell.id} seed {rs.values.get('seed')} epoch {epoch}/{total}"
        return f"{rs.job.cell.id} {ts.trial_id} epoch {epoch}/{total}"

    # ------------------------------------------------------------------ Tune events

    def on_trial_start(self, iteration, trials, trial, **info):
        ts = self._trial(trial)
        self._open(ts, ts.runs[0])
        self.progress.trial_start(trial.trial_id, self._progress_what(ts, ts.runs[0], 0))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ts = self._trial(trial)
        i = int(result.get("run_index", 0))
        rs = ts.runs.get(i)
        if rs is None or rs.done:
            return
        run_id = self._open(ts, rs)
        rs.node_id = str(result.get("node_id") or rs.node_id)
        if not result.get("final"):
            if rs.history and int(result.get("epoch", 0)) <= int(rs.history[-1].get("epoch") or 0):
                return  # a retried worker reports the epoch it continues from again: logged once
            rec = {
                k: v
                for k, v in result.items()
                if k not in BOOKKEEPING and k not in _TUNE_AUTO and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            rec["epoch"] = result.get("epoch")
            rs.history.append(rec)
            self.tracker.log_metrics(run_id, epoch_metrics(rec), step=int(result.get("epoch", 0)))
            self.progress.trial_epoch(trial.trial_id, self._progress_what(ts, rs, result.get("epoch")))
            return
        # the run's final report: ptcore's whole result record + the best epoch's checkpoint
        res = json.loads(result["result_json"])
        predictions = res.pop("predictions", None)  # per-item metric inputs: a file beside the ledger, not a tag
        row = R.row_from_result(self._row(ts, rs), res)
        if predictions and self.phase == FINAL:
            row["predictions"] = R.write_predictions(self.results.path.parent, rs.job.cell.id, ts.trial_id, rs.index, predictions)
        summary = {k: v for k, v in row.items() if R.is_metric_column(k) or k in ("dev_primary", "val_primary", "test_primary")}
        # dev_* of the selected (best) epoch as best_dev_*: the per-epoch dev_* curves stay clean
        summary = {(f"best_{k}" if k.startswith("dev_") else k): v for k, v in summary.items()}
        summary.update({k: row[k] for k in RUN_MEASURES if row.get(k) is not None})
        self.tracker.log_metrics(run_id, summary, step=int(res.get("epochs_run") or 0))
        self.tracker.log_params(run_id, {**{k: str(row[k]) for k in RUN_CONSTANTS if row.get(k) is not None},
                                         **compute_params(res.get("compute"))})  # threads, kernels, device, precision
        tags = {"ptcore.status": "ok", **provenance_tags(res.get("git"), res.get("versions"))}
        if res.get("resumed_at"):  # the run's process died and a retry continued it after these epochs
            tags["ptcore.resumed_at"] = ",".join(str(e) for e in res["resumed_at"])
        if res.get("data_notes"):
            tags["ptcore.data_notes"] = "; ".join(res["data_notes"])
        self.tracker.set_tags(run_id, tags)
        if self.phase == FINAL and result.get("checkpoint_path"):
            limit = self.ls.study.tracking.max_checkpoint_mb
            size = float(res.get("checkpoint_bytes") or 0) / 1e6
            if limit is not None and size > limit:  # result.json still goes to MLflow; the weights do not
                self.tracker.set_tags(run_id, {"ptcore.checkpoint": f"not logged: {size:.1f} MB > tracking.max_checkpoint_mb {limit:g}"})
                self.tracker.log_text(run_id, json.dumps(res, indent=2, default=str), "result.json")
            else:
                self._log_checkpoint(run_id, result["checkpoint_path"], res)
        failpoints.hit(f"record.{self.phase}.before_row")
        self.results.add(row)  # the ledger first: a crash now leaves a stale RUNNING run that resume marks FINISHED
        failpoints.hit(f"record.{self.phase}.after_row")
        self.tracker.end(run_id, "FINISHED")
        rs.done = True
        self.finished += 1
        self.progress.run_done(self.phase, ts.trial_id, row, rs.job.params)
        if self.on_recorded:
            self.on_recorded(rs.job.cell)

    def _log_checkpoint(self, run_id: str, path: str, res: dict) -> None:
        local, tmp = fetch_checkpoint(path, self.storage_path)
        try:
            ckpt = os.path.join(local, "checkpoint")
            self.tracker.log_artifacts(run_id, ckpt if os.path.isdir(ckpt) else local, "checkpoint")
            self.tracker.log_text(run_id, json.dumps(res, indent=2, default=str), "result.json")
        finally:
            if tmp:
                shutil.rmtree(local, ignore_errors=True)

    def _close_unfinished(self, ts: TrialState, status: str, error: Optional[str] = None) -> None:
        """Rows for the runs a trial left unfinished.

        pruned (trial stopped by ASHA): every started run without a final report;
        error: only the run that failed (the first unfinished one); later runs of the trial
        never started, get no row and run again on resume.
        """
        for rs in sorted(ts.runs.values(), key=lambda r: r.index):
            if rs.done:
                continue
            if status != ERROR and rs.mlflow_id is None and not rs.history:
                continue  # never started
            run_id = self._open(ts, rs)
            row = R.row_from_history(self._row(ts, rs), rs.history, rs.resolved, rs.config_hash, self.git)
            row["status"] = status
            row["wall_s"] = time.time() - rs.started if rs.started else None
            if error:
                row["error"] = error
            self.results.add(row)
            self.tracker.set_tags(run_id, {"ptcore.status": status, **({"ptcore.error": error} if error else {})})
            self.tracker.end(run_id, "FAILED" if status == ERROR else "FINISHED")
            rs.done = True
            if status == ERROR:
                self.errors += 1
            self.progress.run_done(self.phase, ts.trial_id, row, rs.job.params)
            if self.on_recorded:
                self.on_recorded(rs.job.cell)
            if status == ERROR:
                break

    def on_trial_complete(self, iteration, trials, trial, **info):
        ts = self._trial(trial)
        self._close_unfinished(ts, "pruned")
        self._prune(trial.trial_id)
        self.progress.trial_end(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        ts = self._trial(trial)
        err = trial_error(trial)
        full = disk_full_in_text(err if isinstance(err, str) else error_line(err))
        if full is not None:  # every later trial would fail the same way: stop the study, exit 3
            self._kill_open(ts)  # no rows: --resume runs them again once there is space
            raise full
        self._close_unfinished(ts, "error", error_line(err))
        self._prune(trial.trial_id)
        self.progress.trial_end(trial.trial_id)

    def _prune(self, trial_id: str) -> None:
        """The ended trial's Ray Train run: its rows are written and its final checkpoints
        logged to MLflow, so nothing reads its checkpoints any more."""
        try:
            prune_train_runs(self.ls, trial_id)
        except OSError:  # pragma: no cover - best effort; the end-of-study sweep tries again
            pass

    def on_trial_recover(self, iteration, trials, trial, **info):
        """The trial failed and Tune starts it again (``ray.max_failures``): its runs stay
        open; the retried process continues from the last reported epoch."""
        self.progress.say(f"{self.phase}  trial {trial.trial_id} failed, retrying from its last epoch: {error_line(trial_error(trial))}")

    def on_step_end(self, iteration, trials, **info):
        check_interrupt()  # a Ctrl-C / kill that a __del__ swallowed still ends the study
        self.progress.heartbeat()

    def abort(self) -> None:
        """Interrupted: every open run ends KILLED; no rows (they are re-run on resume)."""
        for ts in self.trials.values():
            self._kill_open(ts)

    def _kill_open(self, ts: "TrialState") -> None:
        for rs in ts.runs.values():
            if rs.mlflow_id and not rs.done:
                try:
                    self.tracker.set_tags(rs.mlflow_id, {"ptcore.status": "interrupted"})
                    self.tracker.end(rs.mlflow_id, "KILLED")
                except Exception:  # pragma: no cover - best effort while shutting down
                    pass
                rs.done = True


# a run's end: what describes it (MLflow params) and what it measured besides its scores (metrics)
RUN_CONSTANTS = ("trainable_params", "total_params", "checkpoint_bytes", "best_epoch", "epochs_run")
RUN_MEASURES = ("trainable_pct", "wall_s", "train_s")
# keys of an epoch record that are no per-epoch values (the row keeps them), and renames:
# ptcore's "lr" is the schedule's current rate, the param "lr" its peak
EPOCH_CONSTANTS = {"epoch", "trainable_params", "total_params", "layers"}
EPOCH_RENAMES = {"lr": "lr_schedule"}


def epoch_metrics(rec: dict[str, Any]) -> dict[str, Any]:
    """An epoch record's per-epoch values, by their MLflow metric names."""
    return {EPOCH_RENAMES.get(k, k): v for k, v in rec.items() if k not in EPOCH_CONSTANTS}


# keys Tune adds to every result; not metrics of the run
_TUNE_AUTO = {
    "timestamp", "time_this_iter_s", "time_total_s", "training_iteration", "done", "trial_id", "date", "pid",
    "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore", "checkpoint_dir_name",
    "should_checkpoint", "experiment_tag", "timesteps_total", "episodes_total", "timesteps_since_restore",
}  # fmt: skip
