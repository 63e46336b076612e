"""Run a study: every cell searched with Ray Tune (Optuna TPE + ASHA), then the best
configuration of every cell re-run with each final seed; tracked in MLflow and results.csv.

    phase 1, one Tuner for all cells (backbones x tasks x methods):
        trial_fn over per-cell OptunaSearch (TPE, seeded, RDB storage) + per-cell ASHA on dev_primary
        selection: the search run with the highest dev_primary (dev only: val/test never used)
    phase 2, one Tuner for all cells: trial_fn over packs of (cell's best config, seed) runs

:class:`StudyRunner` conducts; each piece lives in its own module:

* :mod:`orchestrator.ledger.outdir`: the output dir (lock, snapshot, ``state/``) and the two
  ledgers ``--resume`` is built on, ``results.csv`` and the Optuna storage (not Tune's
  experiment snapshots, which lag behind after ``kill -9`` and would re-run finished trials).
* :mod:`orchestrator.execution.raysession`: Ray started with the first piece of work and shut down at
  the end; SIGTERM ends a study like Ctrl-C; one study with a local Ray per machine.
* :mod:`orchestrator.execution.phases`: the two phases, one Tuner each, and the Tune plumbing
  (stable experiment and Train run names); :mod:`orchestrator.execution.search`: per-cell Optuna + ASHA.
* :mod:`orchestrator.ledger.summary`: what a cell's rows say; :mod:`orchestrator.execution.recorder` and
  :mod:`orchestrator.tracking.tracker`: rows and MLflow runs as trials report.

At the end it closes the study's and the cells' MLflow runs with the outcome: FINISHED,
FAILED, or KILLED (Ctrl-C, ``kill``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from ptcore import runinfo
from ptcore.errors import PtcoreError

from orchestrator.ledger.disk import prune_train_runs, usage_line
from orchestrator.ledger.outdir import OutputDir, existing_work
from orchestrator.execution.phases import Phases, local_trials, run_spec, trainable
from orchestrator.execution.trial import RunSpec
from orchestrator.execution.progress import Progress
from orchestrator.execution.raysession import RaySession, check_interrupt, restore_signals, signal_handlers, trap_signals, tune_env_defaults
from orchestrator.common.faults import DiskFull, StoreUnavailable, classify, set_logs_dir, short_reason
from orchestrator.common.stores import is_sqlite, redact
from orchestrator.study import LoadedStudy
from orchestrator.ledger.summary import cell_summary
from orchestrator.ledger.results import ERROR
from orchestrator.tracking.tracker import KIND, Tracker, experiment_owner, experiment_tags, provenance_tags, study_tags

log = logging.getLogger(__name__)


class StudyRunner:
    """One invocation of a study: lock and snapshot the output dir, open the tracker and the
    study run, run both phases, then close the MLflow runs with the outcome and stop Ray."""

    def __init__(self, ls: LoadedStudy, *, resume: bool = False, address: Optional[str] = None,
                 write: Optional[Callable[[str], None]] = None, verbose: bool = False, retry_failed: bool = False):
        self.ls = ls
        self.resume = resume
        self.retry_failed = retry_failed
        self.address = address or ls.study.ray.address
        self.verbose = verbose
        self.out = ls.output_dir
        set_logs_dir(self.out / "logs")  # a fatal error's traceback (orchestrator.common.faults.fatal)
        self.cells = ls.cells()
        self.progress = Progress(len(self.cells), write)
        self.ledger = OutputDir(ls)
        self.ray = RaySession(ls, self.address, verbose)
        self.phases: Optional[Phases] = None
        self.study_run: Optional[str] = None

    @property
    def summary(self) -> list[dict[str, Any]]:
        return self.phases.summary if self.phases is not None else []

    # ------------------------------------------------------------------ setup

    def _common_tags(self) -> dict[str, str]:
        self.git = runinfo.git_info()
        self.versions = runinfo.versions()
        return {
            **provenance_tags(self.git, self.versions),
            "ptcore.study": self.ls.name,
            "ptcore.study_hash": self.ls.file_hash,
            "ptcore.study_file": str(self.ls.path.resolve()) if self.ls.path else "",
        }

    # ------------------------------------------------------------------ main loop

    def run(self) -> list[dict[str, Any]]:
        self.ledger.check(self.resume)
        # a shared database: its experiment and Optuna studies of this name are not another output dir's
        self.ledger.check_owner(self.cells, experiment_owner)
        # before anything is written or started: another study's local Ray on this machine
        # (refused, unless --address local), then another driver on this output dir
        with self.ray.machine_lock(), self.ledger.lock():
            self.ledger.check(self.resume)
            return self._run_locked()

    def _run_locked(self) -> list[dict[str, Any]]:
        tune_env_defaults()
        self.uid = self.ledger.snapshot(self.resume, self.progress.say)
        self.results = self.ledger.results()
        if self.retry_failed:
            n = self.results.drop(status=ERROR)
            if n:
                self.progress.say(f"--retry-failed: {n} failed run(s) will run again")
        exp_tags = {**self.ledger.owner(self.uid), **experiment_tags(self.ls.study.description)}
        self.tracker = Tracker(self.ls.mlflow_uri, self.ls.experiment_name, self.out / "mlartifacts", tags=exp_tags,
                               outage_s=self.ls.study.tracking.outage_s)
        stale = self.tracker.close_stale(self.results.done_keys())
        if stale:
            self.progress.say(f"resume: closed {stale} MLflow run(s) left RUNNING by an interrupted run")
        self.ledger.reconcile_optuna(self.cells, self.results)
        self.tags = self._common_tags()
        self.study_run = self.tracker.reuse_or_create(
            self.ls.name, {KIND: "study", "ptcore.study": self.ls.name}, {**self.tags, **study_tags(self.cells)}
        )
        if not self.tracker.client.get_run(self.study_run).data.params:
            self.tracker.log_params(self.study_run, {k: str(v)[:6000] for k, v in self.ls.plan().items()})
        plan = self.ls.plan()
        self.progress.say(
            f"study {self.ls.name}: {plan['cells']} cells, {plan['search_trials']} search trials + {plan['final_runs']} final runs "
            f"-> {self.out}  (MLflow {redact(self.ls.mlflow_uri)}"
            + ("" if is_sqlite(self.ls.optuna_storage) else f", Optuna {redact(self.ls.optuna_storage)}")
            + ")"
        )
        self.phases = Phases(
            self.ls, self.cells, ledger=self.ledger, ray=self.ray, results=self.results, tracker=self.tracker, tags=self.tags,
            git=self.git, study_run=self.study_run, progress=self.progress, resume=self.resume, uid=self.uid,
        )
        old_handlers = signal_handlers()
        status = "FAILED"
        close_runs = True
        try:
            trap_signals()
            self.phases.search_phase()  # phase 1: every cell searched, one Tuner
            check_interrupt()
            self.phases.finals()  # phase 2: every cell's best config x final seeds, one Tuner
            check_interrupt()
            status = "FINISHED"
            order = {c.id: c.index for c in self.cells}
            self.phases.summary.sort(key=lambda s: order.get(s["cell"], len(order)))  # study order, not finishing order
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException as e:
            # the tracking store stayed down past tracking.outage_s (closing its runs would wait the
            # bound out again), or the disk is full (closing them writes): --resume closes them
            # (KILLED) once the store is back or there is space
            close_runs = not isinstance(classify(e), (StoreUnavailable, DiskFull))
            raise
        finally:
            restore_signals(old_handlers)
            if close_runs:
                self._close(status)
            self.ray.shutdown()
            self._prune()
        if status == "FINISHED":
            self.progress.say(usage_line(self.out, self.ls.storage_path))
        return self.summary

    def _prune(self) -> None:
        """Every Ray Train run of the study left in its storage (an attempt cut short by
        ``kill -9``, a trial Tune never reported ended): nothing reads them (see orchestrator.ledger.disk)."""
        try:
            prune_train_runs(self.ls)
        except OSError as e:  # pragma: no cover - never hide the original error
            log.warning("pruning Ray Train runs failed: %s", short_reason(e))

    def _close(self, status: str) -> None:
        try:
            if self.phases is not None:
                self.phases.close(status)
            if self.study_run is not None:
                self.tracker.log_metrics(self.study_run, {"cells_done": sum(1 for s in self.summary if s.get("done"))})
                self.tracker.end(self.study_run, status)
        except Exception as e:  # pragma: no cover - never hide the original error
            log.warning("closing MLflow runs failed: %s", short_reason(e))

    # ------------------------------------------------------------------ Tune plumbing (see orchestrator.execution.phases)

    def _train_env(self) -> dict[str, str]:
        return self.ray.train_env()

    def _spec(self, phase: str) -> RunSpec:
        return run_spec(self.ls, phase, self._train_env())

    def _local_trials(self) -> bool:
        return local_trials(self.ls)

    def _trainable(self, spec: RunSpec):
        return trainable(self.ls, spec)


def run_study(ls: LoadedStudy, **kwargs) -> list[dict[str, Any]]:
    return StudyRunner(ls, **kwargs).run()


__all__ = ["StudyRunner", "run_study", "existing_work", "cell_summary", "PtcoreError"]
