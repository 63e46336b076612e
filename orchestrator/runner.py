"""Run a study: every cell searched with Ray Tune (Optuna TPE + ASHA), then the best
configuration of every cell re-run with each final seed; tracked in MLflow and results.csv.

    phase 1, one Tuner for all cells (backbones x tasks x methods):
        trial_fn over per-cell OptunaSearch (TPE, seeded, sqlite storage) + per-cell ASHA on dev_primary
        selection: the search run with the highest dev_primary (dev only: val/test never used)
    phase 2, one Tuner for all cells: trial_fn over packs of (cell's best config, seed) runs

Each phase is one Tuner so the ``max_concurrent`` lanes stay busy across cells (a Tuner per
cell idles lanes at every cell boundary and pays a Tuner start-up per cell). In the search, each
cell keeps its own Optuna study and ASHA brackets (:mod:`orchestrator.search`). Final runs
are packed into trials (``final.runs_per_trial``, cells sharing a backbone together) so a
Ray Train start-up (~29 s of CPU here: six Python processes, three of them importing
torch and transformers) is paid once for several runs.

Resume (``--resume``) is built on two ledgers in the output dir, not on Tune's experiment
snapshots (which lag behind after ``kill -9`` and would re-run finished trials):

* ``results.csv``: a row is written the moment a run finishes. A cell's search needs
  ``trials_per_cell`` rows, its final one row per seed (for the currently best config).
  Whatever has a row is never run again; what is missing is run now.
* ``optuna.db``: each cell's Optuna study (``<study>/<cell>``). A resumed search loads it,
  so TPE conditions on every trial told so far; trials left RUNNING by a crash are marked
  FAIL first, and the sampler is re-seeded with ``seed + number of trials so far`` so a
  resumed search draws new points rather than replaying the first ones. Raising
  ``trials_per_cell`` (or adding seeds, backbones, tasks, methods) and resuming *extends*
  a study the same way.

Tune experiment names are stable: ``<study>__search-a<attempt>`` and
``<study>__final-a<attempt>`` (attempt counts live in ``state/``); Ray Train runs are
``<study>__<cell>__search-a<attempt>__<trial id>`` and ``<study>__final-a<attempt>__p<pack>__<trial id>``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ptcore.checkpoint import write_json_atomic
from ptcore.errors import PtcoreError

from . import results as R
from .progress import Progress
from .study import Cell, LoadedStudy, StudyError, compose_run, pack_runs
from .trial import merge_params

if TYPE_CHECKING:
    from .recorder import Job

DRIVER_MEMORY = 64 * 1024**2  # the Tune trial is only a driver for its Train run: no CPU
log = logging.getLogger(__name__)


class StudyInterrupted(KeyboardInterrupt):
    pass


def existing_work(out: Path) -> int:
    """How many finished runs an output dir holds (0: a fresh study)."""
    path = out / "results.csv"
    if not path.is_file():
        return 0
    return len(R.ResultsTable(path).rows)


def optuna_space(search: dict) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {}
    for key, sp in search.items():
        if sp.type == "int":
            space[key] = IntDistribution(int(sp.low), int(sp.high))
        elif sp.type == "float":
            space[key] = FloatDistribution(float(sp.low), float(sp.high))
        elif sp.type == "loguniform":
            space[key] = FloatDistribution(float(sp.low), float(sp.high), log=True)
        else:
            space[key] = CategoricalDistribution(list(sp.values))
    return space


class _Lock:
    """One driver per output dir (released by the kernel even after kill -9)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: Optional[int] = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StudyError(f"{self.path.parent}: another `orchestrate study` is running on this output dir") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


class StudyRunner:
    def __init__(self, ls: LoadedStudy, *, resume: bool = False, address: Optional[str] = None,
                 write: Optional[Callable[[str], None]] = None, verbose: bool = False, retry_failed: bool = False):
        self.ls = ls
        self.resume = resume
        self.retry_failed = retry_failed
        self.address = address or ls.study.ray.address
        self.verbose = verbose
        self.out = ls.output_dir
        self.cells = ls.cells()
        self.progress = Progress(len(self.cells), write)
        self.recorder = None
        self.cell_runs: dict[str, str] = {}  # cell id -> its open MLflow run
        self.study_run: Optional[str] = None
        self.summary: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ setup

    def _check_output(self) -> None:
        manifest = self.out / "study.json"
        if manifest.is_file():
            other = json.loads(manifest.read_text()).get("name")
            if other and other != self.ls.name:
                raise StudyError(f"{self.out} holds study {other!r}, not {self.ls.name!r}; choose another output_dir")
        n = existing_work(self.out)
        if n and not self.resume:
            raise StudyError(
                f"{self.out} already holds {n} finished run(s) of study {self.ls.name!r}; "
                f"pass --resume to continue it, or set another output_dir (or delete that directory)"
            )

    def _snapshot(self) -> None:
        """The study file and plan as run, plus a history of invocations."""
        self.out.mkdir(parents=True, exist_ok=True)
        manifest_path = self.out / "study.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"name": self.ls.name, "invocations": []}
        prev = manifest["invocations"][-1]["file_hash"] if manifest["invocations"] else None
        if prev and prev != self.ls.file_hash:
            self.progress.say(f"note: the study file changed since the last run ({prev} -> {self.ls.file_hash}); finished runs are kept")
        manifest["invocations"].append(
            {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "file": str(self.ls.path), "file_hash": self.ls.file_hash, "resume": self.resume}
        )
        write_json_atomic(manifest_path, manifest)
        write_json_atomic(self.out / "plan.json", self.ls.plan())
        if self.ls.path is not None and self.ls.path.is_file():
            (self.out / "study.yaml").write_text(self.ls.path.read_text())

    def _state(self, cell: Cell) -> dict:
        p = self.out / "state" / f"{cell.id}.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def _save_state(self, cell: Cell, **updates) -> dict:
        state = {**self._state(cell), **updates}
        write_json_atomic(self.out / "state" / f"{cell.id}.json", state)
        return state

    def _reconcile_optuna(self) -> None:
        """After a crash or Ctrl-C, Optuna trials left RUNNING: COMPLETE if results.csv has
        the run (the row was written, Tune had not told Optuna yet), else FAIL."""
        if not (self.out / "optuna.db").is_file():
            return
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(f"sqlite:///{self.out / 'optuna.db'}")
        for cell in self.cells:
            _close_stale_optuna(storage, f"{self.ls.name}/{cell.id}", self.results.select(cell=cell.id))

    def _init_ray(self) -> None:
        import ray

        # a local Ray inherits the driver's environment; workers on other nodes get the
        # cache dir through train_loop_config (no runtime_env: it slows every worker start)
        os.environ.update({"PTCORE_CACHE_DIR": self.ls.cache_dir, "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "1"})
        if not self.verbose:  # Tune's notes on slow callbacks (artifact uploads) and on the loggers we turned off
            for name in ("ray.tune.analysis.experiment_analysis", "ray.tune.utils.util"):
                logging.getLogger(name).setLevel(logging.ERROR)
        kwargs: dict[str, Any] = dict(
            log_to_driver=self.verbose,
            logging_level=logging.INFO if self.verbose else logging.WARNING,
        )
        if self.address:
            ray.init(address=self.address, **kwargs)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(**kwargs)  # RAY_ADDRESS names the cluster
        else:
            ray.init(num_cpus=self.ls.study.ray.num_cpus, **kwargs)

    def _common_tags(self) -> dict[str, str]:
        from ptcore import runinfo

        from .tracking import provenance_tags

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
        self._check_output()
        with _Lock(self.out / ".lock"):
            self._check_output()
            return self._run_locked()

    def _run_locked(self) -> list[dict[str, Any]]:
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C -> KeyboardInterrupt -> runs KILLED
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we log to MLflow ourselves
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        self._snapshot()
        from .tracking import KIND, Tracker

        self.results = R.ResultsTable(self.out / "results.csv")
        if self.retry_failed:
            n = self.results.drop(status="error")
            if n:
                self.progress.say(f"--retry-failed: {n} failed run(s) will run again")
        self.tracker = Tracker(self.ls.mlflow_uri, self.ls.experiment_name, self.out / "mlartifacts")
        stale = self.tracker.close_stale(self.results.done_keys())
        if stale:
            self.progress.say(f"resume: closed {stale} MLflow run(s) left RUNNING by an interrupted run")
        self._reconcile_optuna()
        self.tags = self._common_tags()
        self.study_run = self.tracker.reuse_or_create(self.ls.name, {KIND: "study", "ptcore.study": self.ls.name}, self.tags)
        if not self.tracker.client.get_run(self.study_run).data.params:
            self.tracker.log_params(self.study_run, {k: str(v)[:6000] for k, v in self.ls.plan().items()})
        plan = self.ls.plan()
        self.progress.say(
            f"study {self.ls.name}: {plan['cells']} cells, {plan['search_trials']} search trials + {plan['final_runs']} final runs "
            f"-> {self.out}  (MLflow {self.ls.mlflow_uri})"
        )
        old_term = signal.getsignal(signal.SIGTERM)
        status = "FAILED"
        try:
            signal.signal(signal.SIGTERM, _raise_interrupt)
            self._search_phase()  # phase 1: every cell searched, one Tuner
            self._finals()  # phase 2: every cell's best config x final seeds, one Tuner
            status = "FINISHED"
            order = {c.id: c.index for c in self.cells}
            self.summary.sort(key=lambda s: order.get(s["cell"], len(order)))  # study order, not finishing order
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            signal.signal(signal.SIGTERM, old_term)
            self._close(status)
            if self._ray_started:
                import ray

                ray.shutdown()
        return self.summary

    _ray_started = False

    def _ensure_ray(self) -> None:
        """Ray starts with the first piece of work (a finished study resumes instantly)."""
        if not self._ray_started:
            self._init_ray()
            self._ray_started = True
            # ray.init installs a C++ handler that aborts the driver on SIGTERM (MLflow runs
            # left RUNNING): ours again, so `kill` ends the study like Ctrl-C does
            signal.signal(signal.SIGTERM, _raise_interrupt)

    def _close(self, status: str) -> None:
        try:
            if self.recorder is not None and status != "FINISHED":
                self.recorder.abort()
            for cell_id, run_id in list(self.cell_runs.items()):
                self.tracker.end(run_id, status)
                self.cell_runs.pop(cell_id)
            if self.study_run is not None:
                self.tracker.log_metrics(self.study_run, {"cells_done": sum(1 for s in self.summary if s.get("done"))})
                self.tracker.end(self.study_run, status)
        except Exception as e:  # pragma: no cover - never hide the original error
            log.warning("closing MLflow runs failed: %s", e)

    # ------------------------------------------------------------------ cells

    def _targets(self, cell: Cell) -> int:
        return self.ls.study.budget.trials_per_cell if cell.method.search else 0

    def _cell_run(self, cell: Cell) -> str:
        """The cell's MLflow run, opened on its first piece of work (reopened on resume)."""
        from .tracking import CELL, KIND

        if cell.id not in self.cell_runs:
            self.cell_runs[cell.id] = self.tracker.reuse_or_create(
                cell.id,
                {KIND: "cell", CELL: cell.id},
                {**self.tags, "ptcore.backbone": cell.backbone.display(), "ptcore.task": cell.task, "ptcore.method": cell.method.display()},
                parent=self.study_run,
            )
        return self.cell_runs[cell.id]

    def _seeds_left(self, cell: Cell, source: Optional[str]) -> list[int]:
        src = source or "fixed"
        done = {int(r["seed"]) for r in self.results.select(cell=cell.id, phase="final") if r.get("source_trial") == src}
        return [s for s in self.ls.study.final.seeds if s not in done]

    def _selection(self, cell: Cell) -> tuple[Optional[dict], str, dict]:
        """(best search row or None, its trial id or 'fixed', its searched values)."""
        best = R.best_search_row(self.results.select(cell=cell.id))
        if best is None:
            return None, "fixed", {}
        return best, str(best["trial_id"]), json.loads(best["params_json"] or "{}")

    def _search_phase(self) -> None:
        """Every cell with search trials left, in one Tuner (see :mod:`orchestrator.search`)."""
        todo: dict[int, int] = {}
        for cell in self.cells:
            n = len(self.results.select(cell=cell.id, phase="search"))
            remaining = self._targets(cell) - n
            if remaining > 0:
                todo[cell.index] = remaining
            elif cell.method.search and self.resume:
                self.progress.cell_skip("search", cell.id, f"search done ({n} trials)")
        if not todo:
            return
        self.progress.cell_start("search", f"{len(todo)} cell(s)", f"{sum(todo.values())} trial(s)")
        self._ensure_ray()
        self._search(todo)

    def _search_recorded(self, cell: Cell) -> None:
        """After each search row: a cell whose trials are all in has its selection now."""
        n = len(self.results.select(cell=cell.id, phase="search"))
        if n < self._targets(cell) or self._state(cell).get("search_done_rows") == n:
            return
        best, source, params = self._selection(cell)
        self._save_state(cell, best_trial=source if best else None, best_params=params,
                         best_dev=best["dev_primary"] if best else None, search_done_rows=n)
        self.progress.cell_end(
            cell.id, f"best dev {R_fmt(best['dev_primary'])} ({_params_str(params)})" if best else "no trial produced a dev score"
        )

    def _finals(self) -> None:
        """Every cell's selected configuration x its missing seeds, as one Tuner (lanes stay full)."""
        from .recorder import Job

        jobs: list[Job] = []
        todo: list[Cell] = []
        for cell in self.cells:
            best, source, params = self._selection(cell)
            if cell.method.search and best is None:  # nothing to select from (all failed)
                if cell.id in self.cell_runs or self.results.select(cell=cell.id):
                    self._finish_cell(cell, announce=True)
                continue
            seeds = self._seeds_left(cell, source)
            if not seeds:
                self._finish_cell(cell, announce=False)
                continue
            todo.append(cell)
            run = self._cell_run(cell)
            self.tracker.set_tags(run, {"ptcore.best_trial": source, "ptcore.best_params": json.dumps(params, sort_keys=True)})
            jobs.append(Job(cell, run, [compose_run(self.ls, cell, params, seed=s) for s in seeds], params, source))
        if not jobs:
            return
        packs = self._longest_first(pack_runs(jobs, self.ls.study.final.runs_per_trial))
        name = f"{self.ls.name}__final-a{self._bump('final_attempts')}"
        n_runs = sum(len(j.runs) for j in jobs)
        self.progress.cell_start("final", f"{len(todo)} cell(s)", f"{n_runs} run(s) in {len(packs)} trial(s)")
        self._ensure_ray()
        import ray.tune

        from .recorder import Recorder

        spec = self._spec("final")
        spec["jobs"] = [
            {"runs": [v for job in pack for v in job.runs], "run_prefix": f"{name}__p{k:03d}"} for k, pack in enumerate(packs)
        ]
        self.recorder = Recorder(
            study=self.ls, phase="final", tracker=self.tracker, results=self.results, progress=self.progress,
            common_tags=self.tags, storage_path=self.ls.storage_path, git=self.git, packs=packs,
            epochs=int(jobs[0].runs[0].get("epochs", 10)), on_recorded=self._on_final_recorded,
        )
        tuner = ray.tune.Tuner(
            self._trainable(spec),
            param_space={"job": ray.tune.grid_search(list(range(len(packs))))},
            tune_config=ray.tune.TuneConfig(max_concurrent_trials=self.ls.study.budget.max_concurrent, reuse_actors=self._local_trials()),
            run_config=self._tune_run_config(name, self.recorder),
        )
        tuner.fit()
        self.recorder = None
        self._clean_train_runs(f"{name}__p*__*")
        for cell in todo:
            if cell.id in self.cell_runs:  # not finished by the callback: a seed failed
                self._finish_cell(cell, announce=True)

    def _longest_first(self, packs: list[list[Job]]) -> list[list[Job]]:
        """Packs in decreasing expected duration (a cell's mean search-run wall time x its
        runs), so the short ones fill the lanes at the end instead of a long one running
        alone (longest-processing-time-first scheduling). Cells without search rows count 0."""
        cost: dict[str, float] = {}
        for cell in self.cells:
            walls = [float(r["wall_s"]) for r in self.results.select(cell=cell.id, phase="search") if r.get("wall_s") is not None]
            cost[cell.id] = statistics.fmean(walls) if walls else 0.0
        return sorted(packs, key=lambda pack: -sum(cost[j.cell.id] * len(j.runs) for j in pack))  # stable for ties

    def _on_final_recorded(self, cell: Cell) -> None:
        """After each final run's row: a cell whose seeds are all in is done now."""
        _, source, _ = self._selection(cell)
        if not self._seeds_left(cell, source) and cell.id in self.cell_runs:
            self._finish_cell(cell, announce=True)

    def _finish_cell(self, cell: Cell, announce: bool) -> None:
        summ = self._cell_summary(cell)
        self.summary = [s for s in self.summary if s["cell"] != cell.id] + [summ]
        if cell.id in self.cell_runs:
            run = self.cell_runs.pop(cell.id)
            metrics = {k: summ[k] for k in ("best_dev", "val_mean", "val_std", "test_mean") if summ.get(k) is not None}
            self.tracker.log_metrics(run, metrics)
            self.tracker.end(run, "FINISHED" if summ["done"] else "FAILED")
            self._save_state(cell, done=summ["done"], finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self._clean_train_runs(f"{self.ls.name}__{cell.id}__*__*")
        if announce:
            self.progress.cell_done(
                cell.id,
                (f"best dev {R_fmt(summ['best_dev'])} ({summ['best_params']})" if cell.method.search else "fixed configuration (no search)")
                + f"; final val {R_fmt(summ['val_mean'])}"
                f" ± {R_fmt(summ['val_std'])} over {summ['final_ok']} seed(s)" + ("" if summ["done"] else " [INCOMPLETE]"),
            )
        else:
            self.progress.cell_skip("final", cell.id, "already done")

    def _clean_train_runs(self, pattern: str) -> None:
        """Ray Train's copies of finished runs' checkpoints (final ones are MLflow artifacts
        now); ``pattern`` globs Train run names ``<prefix>__<trial id>``."""
        if self.ls.study.ray.keep_train_checkpoints or "://" in self.ls.storage_path:
            return
        import shutil

        root = Path(self.ls.storage_path)
        for d in root.glob(pattern):
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------------ Tune plumbing

    def _study_state(self) -> dict:
        p = self.out / "state" / "_study.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def _save_study_state(self, **updates) -> None:
        write_json_atomic(self.out / "state" / "_study.json", {**self._study_state(), **updates})

    def _bump(self, key: str) -> int:
        """A study-level attempt counter (stable Tune experiment names across resumes)."""
        n = int(self._study_state().get(key, 0)) + 1
        self._save_study_state(**{key: n})
        return n

    def _spec(self, phase: str) -> dict[str, Any]:
        from ptcore.config import run_fields

        return {
            "phase": phase,
            "run_keys": sorted(run_fields()),
            "resources": self.ls.study.resources.model_dump(),
            "cache_dir": self.ls.cache_dir,
            "storage_path": self.ls.storage_path,
            "checkpoint_epochs": self.ls.study.ray.checkpoint_every_epoch,
            "train_env": self._train_env(),
            "trial_mode": self.ls.study.ray.trial_mode,
        }

    def _train_env(self) -> dict[str, str]:
        """Ray Train V2 settings for every trial (set in the trial, which starts the Train run;
        a variable already set in the environment wins).

        * Train's controller polls its workers every 2 s by default: a finished run held its
          lane up to 2 s longer, and runs here last seconds to minutes.
        * A reused trial process waits for the previous trial's training thread to end
          before it takes the next trial; Tune gives up after 2 s (and Ray 2.60 then leaves
          the next trial PENDING for ever). A stopped trial's thread unwinds at its next
          report, which on a loaded machine can take longer: 60 s.
        * A Ray that this driver started is one machine: no spot preemption to watch for and
          no cluster metrics to export; each would cost CPU per run (the watcher is one
          more Python process per run).
        """
        env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}
        if not (self.address or os.environ.get("RAY_ADDRESS")):
            env.update({"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"})
        return {k: os.environ.get(k, v) for k, v in env.items()}

    def _local_trials(self) -> bool:
        from .trial import runs_locally

        return runs_locally(self.ls.study.resources.model_dump(), self.ls.study.ray.trial_mode)

    def _trainable(self, spec: dict[str, Any]):
        """Local mode: the trial process trains, so it holds the worker's CPUs (and GPUs).
        Worker groups: the trial only drives its Train run (no CPU); the workers hold them."""
        import ray.tune

        from .trial import trial_fn

        res = self.ls.study.resources
        if self._local_trials():
            resources = {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}
        else:
            resources = {"cpu": 0, "memory": DRIVER_MEMORY}
        return ray.tune.with_resources(ray.tune.with_parameters(trial_fn, spec=spec), resources)

    def _tune_run_config(self, name: str, recorder):
        import ray.tune

        return ray.tune.RunConfig(
            name=name,
            storage_path=self.ls.storage_path,
            callbacks=[recorder],
            verbose=0,
            failure_config=ray.tune.FailureConfig(max_failures=0),
        )

    def _search(self, todo: dict[int, int]) -> None:
        """``todo``: cell index -> trials still to run. One Tuner; per cell an Optuna study
        (TPE) and ASHA brackets of its own (:class:`~orchestrator.search.CellSearch`)."""
        import optuna
        import ray.tune
        from ray.tune.schedulers import ASHAScheduler

        from .recorder import Job, Recorder
        from .search import CellASHA, CellSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(f"sqlite:///{self.out / 'optuna.db'}")
        b = self.ls.study.budget
        spec = self._spec("search")
        spec["cells"], searchers, schedulers = {}, {}, {}
        epochs_max = 1
        for index in todo:
            cell = self.cells[index]
            attempt = int(self._state(cell).get("search_attempts", 0)) + 1
            self._save_state(cell, search_attempts=attempt)
            base = compose_run(self.ls, cell)
            spec["cells"][index] = {"base": base, "run_prefix": f"{self.ls.name}__{cell.id}__search-a{attempt}"}
            epochs = int(base.get("epochs", 10))
            if "epochs" in cell.method.search:
                sp = cell.method.search["epochs"]
                epochs = int(max(sp.values) if sp.type == "choice" else sp.high)
            epochs_max = max(epochs_max, epochs)
            study_name = f"{self.ls.name}/{cell.id}"
            n_before = _close_stale_optuna(storage, study_name, self.results.select(cell=cell.id))
            searchers[index] = _OptunaSearch(
                space=optuna_space(cell.method.search),
                metric="dev_primary",
                mode="max",
                sampler=optuna.samplers.TPESampler(seed=b.seed + n_before),
                study_name=study_name,
                storage=storage,
            )
            schedulers[index] = ASHAScheduler(
                time_attr="epoch", metric="dev_primary", mode="max", max_t=epochs + 1,  # +1: the last epoch's report is never a stop
                grace_period=b.grace_period, reduction_factor=b.reduction_factor,
            )

        def search_job(index: int, params: dict) -> Job:
            cell = self.cells[index]
            return Job(cell, self._cell_run(cell), [merge_params(spec["cells"][index]["base"], params, spec["run_keys"])], params)

        self.recorder = Recorder(
            study=self.ls, phase="search", tracker=self.tracker, results=self.results, progress=self.progress,
            common_tags=self.tags, storage_path=self.ls.storage_path, git=self.git, epochs=epochs_max,
            search_job=search_job, on_recorded=self._search_recorded,
        )
        tuner = ray.tune.Tuner(
            self._trainable(spec),
            tune_config=ray.tune.TuneConfig(
                search_alg=CellSearch(searchers, todo, metric="dev_primary", mode="max"),
                scheduler=CellASHA(schedulers),
                num_samples=sum(todo.values()),
                max_concurrent_trials=b.max_concurrent,
                time_budget_s=b.time_budget_s,
                # local-mode trial processes are reused: torch, transformers, the backbone and
                # the tokenized splits stay loaded (see _train_env for the reset timeout)
                reuse_actors=self._local_trials(),
            ),
            run_config=self._tune_run_config(f"{self.ls.name}__search-a{self._bump('search_attempts')}", self.recorder),
        )
        tuner.fit()
        self.recorder = None

    # ------------------------------------------------------------------ summaries

    def _cell_summary(self, cell: Cell) -> dict[str, Any]:
        return cell_summary(cell, self.results.select(cell=cell.id), self._targets(cell), self.ls.study.final.seeds)


def _params_str(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "-"


def R_fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def cell_summary(cell: Cell, rows: list[dict[str, Any]], target: int, seeds: list[int]) -> dict[str, Any]:
    search = [r for r in rows if r["phase"] == "search"]
    best = R.best_search_row(rows)
    source = best["trial_id"] if best else "fixed"
    finals = [r for r in rows if r["phase"] == "final" and r.get("source_trial") == source]
    ok = [r for r in finals if r["status"] == "ok"]
    vals = [r["val_primary"] for r in ok if r.get("val_primary") is not None]
    tests = [r["test_primary"] for r in ok if r.get("test_primary") is not None]
    params = json.loads(best["params_json"]) if best and best.get("params_json") else {}
    return {
        "cell": cell.id,
        "backbone": cell.backbone.display(),
        "task": cell.task,
        "method": cell.method.display(),
        "search": f"{sum(r['status'] == 'ok' for r in search)}/{sum(r['status'] == 'pruned' for r in search)}/{sum(r['status'] == 'error' for r in search)}",
        "best_dev": best["dev_primary"] if best else None,
        "best_params": _params_str(params),
        "final_ok": len(ok),
        "val_mean": statistics.fmean(vals) if vals else None,
        "val_std": statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None),
        "test_mean": statistics.fmean(tests) if tests else None,
        "trainable_pct": ok[0].get("trainable_pct") if ok else None,
        "done": len(search) >= target and len({int(r["seed"]) for r in finals}) >= len(seeds) and len(ok) == len(finals),
    }


def _raise_interrupt(signum, frame):
    raise StudyInterrupted(f"signal {signum}")


def _close_stale_optuna(storage, study_name: str, rows: list[dict]) -> int:
    """Optuna trials a crash left RUNNING: COMPLETE with the dev score if results.csv has
    their run (killed between our row and Tune telling Optuna), else FAIL (TPE ignores
    them). Returns the study's trial count."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0
    dev = {str(r["trial_id"]): r.get("dev_primary") for r in rows if r.get("phase") == "search"}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        value = dev.get(str(t.user_attrs.get("tune_trial_id")))
        if value is not None:
            storage.set_trial_state_values(t._trial_id, TrialState.COMPLETE, [float(value)])
        else:
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False))


def _make_optuna_search():
    from ray.tune.search.optuna import OptunaSearch

    class _Search(OptunaSearch):
        """OptunaSearch that records the Tune trial id on each Optuna trial (to cross-reference)."""

        def suggest(self, trial_id):
            cfg = super().suggest(trial_id)
            ot = getattr(self, "_ot_trials", {}).get(trial_id)
            if ot is not None:
                try:
                    ot.set_user_attr("tune_trial_id", trial_id)
                except Exception:  # pragma: no cover - optional bookkeeping
                    pass
            return cfg

    return _Search


def _OptunaSearch(**kwargs):
    return _make_optuna_search()(**kwargs)


def run_study(ls: LoadedStudy, **kwargs) -> list[dict[str, Any]]:
    return StudyRunner(ls, **kwargs).run()


__all__ = ["StudyRunner", "run_study", "existing_work", "cell_summary", "PtcoreError"]
