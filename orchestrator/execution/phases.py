"""The study's two phases, each one Tuner for all cells, and the Tune plumbing they share.

    phase 1, one Tuner for all cells (backbones x tasks x methods):
        trial_fn over per-cell OptunaSearch (TPE, seeded, RDB storage) + per-cell ASHA on dev_primary
        selection: the search run with the highest dev_primary (dev only: val/test never used)
    phase 2, one Tuner for all cells: trial_fn over packs of (cell's best config, seed) runs

Each phase is one Tuner so the ``max_concurrent`` lanes stay busy across cells (a Tuner per
cell idles lanes at every cell boundary and pays a Tuner start-up per cell). In the search, each
cell keeps its own Optuna study and ASHA brackets (:mod:`orchestrator.execution.search`). Final runs
may be packed into trials (``final.runs_per_trial``, cells sharing a backbone together). With
single-worker CPU trials the trial processes are reused (Ray Train local mode, see
:mod:`orchestrator.execution.trial`), so a trial costs little beyond its runs; with worker groups a
trial pays a Ray Train start-up (~29 s of CPU here: a controller and a worker process
importing torch and transformers), which packing spreads over several runs.

What each phase runs is what the ledgers lack (:mod:`orchestrator.ledger.outdir`). As rows land,
:class:`Phases` keeps every cell's MLflow run, selection, state and summary up to date.

Tune experiment names are stable: ``<study>__search-a<attempt>`` and
``<study>__final-a<attempt>`` (attempt counts live in ``state/``); Ray Train runs are
``<study>__<cell>__search-a<attempt>__<trial id>`` and ``<study>__final-a<attempt>__p<pack>__<trial id>``.

The recorder and the search import Ray at module level; this module imports them inside the
methods that need them, so the runner and this module load without Ray (a study refused before
any work, a busy output dir or machine, never imports it).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from orchestrator.ledger import results as R
from orchestrator.ledger.results import FINAL, SEARCH
from orchestrator.ledger.outdir import OutputDir, close_stale_optuna
from orchestrator.execution.progress import Progress
from orchestrator.execution.raysession import RaySession
from orchestrator.study import Cell, LoadedStudy, compose_run, final_seeds, pack_runs
from orchestrator.ledger.summary import cell_summary, done_line, selection_line, summary_metrics
from orchestrator.execution.trial import RunSpec, merge_params, runs_locally, trial_fn
from orchestrator.tracking.search_plots import draw
from orchestrator.tracking.tracker import CELL, KIND, PHASE, cell_tags, cell_title, flatten_config

if TYPE_CHECKING:
    from orchestrator.execution.recorder import Job

DRIVER_MEMORY = 64 * 1024**2  # worker groups: the Tune trial only drives its Train run (no CPU)


# ------------------------------------------------------------------ Tune plumbing


def static_cost(values: dict[str, Any], default_examples: int = 1000) -> float:
    """A run's size before anything has run: training examples per task (``train_size``,
    else ``max_train_examples``, else ``default_examples``) x tasks x epochs. Only its order
    matters (:meth:`Phases._longest_first`)."""
    per_task = values.get("train_size") or values.get("max_train_examples") or default_examples
    return float(per_task) * len(str(values.get("task", "")).split("+")) * float(values.get("epochs") or 10)


def run_spec(ls: LoadedStudy, phase: str, train_env: dict[str, str]) -> RunSpec:
    """What the driver fixes for a phase's trials (``trial_fn``'s ``spec``); the phase adds its
    cells (search) or jobs (final) with ``dataclasses.replace``."""
    return RunSpec(
        phase=phase,
        resources=ls.study.resources.model_dump(),
        cache_dir=ls.cache_dir,
        storage_path=ls.storage_path,
        checkpoint_every_epoch=ls.study.ray.checkpoint_every_epoch,
        trial_mode=ls.study.ray.trial_mode,
        max_failures=ls.study.ray.max_failures,
        train_env=dict(train_env),
    )


def local_trials(ls: LoadedStudy) -> bool:
    return runs_locally(ls.study.resources.model_dump(), ls.study.ray.trial_mode)


def trainable(ls: LoadedStudy, spec: RunSpec):
    """Local mode: the trial process trains, so it holds the worker's CPUs (and GPUs).
    Worker groups: the trial only drives its Train run (no CPU); the workers hold them."""
    import ray.tune

    res = ls.study.resources
    if local_trials(ls):
        resources = {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}
    else:
        resources = {"cpu": 0, "memory": DRIVER_MEMORY}
    return ray.tune.with_resources(ray.tune.with_parameters(trial_fn, spec=spec), resources)


def tune_run_config(ls: LoadedStudy, name: str, recorder):
    import ray.tune

    return ray.tune.RunConfig(
        name=name,
        storage_path=ls.storage_path,
        callbacks=[recorder],
        verbose=0,
        # local mode: the trial process trains, so Tune retries it (it continues from its last
        # epoch, orchestrator.execution.worker.resume_point); worker groups: Ray Train restarts the workers
        failure_config=ray.tune.FailureConfig(max_failures=ls.study.ray.max_failures if local_trials(ls) else 0),
    )


# ------------------------------------------------------------------ the two phases


class Phases:
    """Both phases of one invocation over the study's cells, and what they share: the
    results table, the open MLflow run of each cell, the recorder of the running Tuner,
    and the cells' summaries (:attr:`summary`, in finishing order)."""

    def __init__(self, ls: LoadedStudy, cells: list[Cell], *, ledger: OutputDir, ray: RaySession, results: R.ResultsTable,
                 tracker, tags: dict[str, str], git: dict, study_run: str, progress: Progress, resume: bool, uid: str = ""):
        self.ls = ls
        self.cells = cells
        self.ledger = ledger
        self.ray = ray
        self.results = results
        self.tracker = tracker
        self.tags = tags
        self.git = git
        self.study_run = study_run
        self.progress = progress
        self.resume = resume
        self.uid = uid  # the output dir's study id: marks the cells' Optuna studies as ours
        self.recorder = None
        self.cell_runs: dict[str, str] = {}  # cell id -> its open MLflow run
        self.summary: list[dict[str, Any]] = []

    def _spec(self, phase: str) -> RunSpec:
        return run_spec(self.ls, phase, self.ray.train_env())

    def close(self, status: str) -> None:
        """Interrupted or failed: the running Tuner's open runs, then every open cell run, end with ``status``."""
        if self.recorder is not None and status != "FINISHED":
            self.recorder.abort()
        for cell_id, run_id in list(self.cell_runs.items()):
            self.tracker.end(run_id, status)
            self.cell_runs.pop(cell_id)

    # ------------------------------------------------------------------ cells

    def _targets(self, cell: Cell) -> int:
        return self.ls.study.budget.trials_per_cell if cell.method.search else 0

    def _cell_run(self, cell: Cell) -> str:
        """The cell's MLflow run, opened on its first piece of work (reopened on resume)."""
        if cell.id not in self.cell_runs:
            self.cell_runs[cell.id] = self.tracker.reuse_or_create(
                cell_title(cell), {KIND: "cell", CELL: cell.id}, {**self.tags, **cell_tags(cell), PHASE: "cell"}, parent=self.study_run
            )
        return self.cell_runs[cell.id]

    def _log_selection(self, cell: Cell, run: str, source: str, params: dict) -> None:
        """The cell run's selected configuration as its params: the resolved RunConfig its
        final runs share (their seeds aside), by the leaf runs' param names; the search trial
        it comes from as a tag. A selection that changed after an earlier attempt logged its
        params (a search cut short by ``time_budget_s``, resumed) cannot rewrite them
        (MLflow params are write-once): a tag names those keys."""
        from orchestrator.execution.recorder import resolve_values  # deferred: pulls Ray (module docstring)

        values = compose_run(self.ls, cell, params)
        resolved, _ = resolve_values(values)
        config = {k: v for k, v in (resolved or values).items() if k not in ("seed", "data_seed")}
        stale = self.tracker.log_new_params(run, flatten_config(config))
        tags = {"ptcore.best_trial": source}
        if stale:
            tags["ptcore.stale_params"] = f"{', '.join(stale)}: an earlier selection's values (MLflow params are write-once)"
        self.tracker.set_tags(run, tags)

    def _log_search_plots(self, cell: Cell, run: str) -> None:
        """The cell's search as figures under its run (``search/``; :mod:`orchestrator.tracking.search_plots`)."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            try:
                written, skipped = draw(self.ls.optuna_storage, self.ls.optuna_study_name(cell), Path(d))
            except Exception as e:  # noqa: BLE001  (no Optuna study yet, a storage hiccup: a figure never fails the study)
                written, skipped = [], [f"{type(e).__name__}: {e}"]
            if written:
                self.tracker.log_artifacts(run, d, "search")
        if skipped:
            self.tracker.set_tags(run, {"ptcore.search_plots": "; ".join(skipped)[:5000]})

    def _seeds_left(self, cell: Cell, source: Optional[str]) -> list[int]:
        src = source or "fixed"
        done = {int(r["seed"]) for r in self.results.select(cell=cell.id, phase=FINAL) if r.get("source_trial") == src}
        return [s for s in final_seeds(self.ls.study, cell) if s not in done]

    def _selection(self, cell: Cell) -> tuple[Optional[dict], str, dict]:
        """(best search row or None, its trial id or 'fixed', its searched values)."""
        best = R.best_search_row(self.results.select(cell=cell.id), self._halving(cell))
        if best is None:
            return None, "fixed", {}
        return best, str(best["trial_id"]), json.loads(best["params_json"] or "{}")

    def _halving(self, cell: Cell) -> Optional[tuple[int, int, float]]:
        """(epochs, grace period, reduction factor) where the study selects by successive
        halving over the ledger's curves (orchestrator.ledger.halving); None under 'asha'."""
        from orchestrator.execution.search import search_epochs  # deferred: pulls Ray (module docstring)

        b = self.ls.study.budget
        if b.scheduler != "halving":
            return None
        return search_epochs(cell, compose_run(self.ls, cell)), b.grace_period, b.reduction_factor

    def _cell_summary(self, cell: Cell) -> dict[str, Any]:
        return cell_summary(cell, self.results.select(cell=cell.id), self._targets(cell), final_seeds(self.ls.study, cell),
                            self._halving(cell))

    def _finish_cell(self, cell: Cell, announce: bool) -> None:
        summ = self._cell_summary(cell)
        self.summary = [s for s in self.summary if s["cell"] != cell.id] + [summ]
        if cell.id in self.cell_runs:
            run = self.cell_runs.pop(cell.id)
            self.tracker.log_metrics(run, summary_metrics(summ))
            self.tracker.end(run, "FINISHED" if summ["done"] else "FAILED")
            self.ledger.save_state(cell, done=summ["done"], finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if announce:
            self.progress.cell_done(cell.id, done_line(cell, summ))
        else:
            self.progress.cell_skip("final", cell.id, "already done")

    # ------------------------------------------------------------------ phase 1: search

    def search_phase(self) -> None:
        """Every cell with search trials left, in one Tuner (see :mod:`orchestrator.execution.search`)."""
        todo: dict[int, int] = {}
        for cell in self.cells:
            n = len(self.results.select(cell=cell.id, phase=SEARCH))
            remaining = self._targets(cell) - n
            if remaining > 0:
                todo[cell.index] = remaining
            elif cell.method.search and self.resume:
                self.progress.cell_skip("search", cell.id, f"search done ({n} trials)")
        if not todo:
            return
        self.progress.cell_start("search", f"{len(todo)} cell(s)", f"{sum(todo.values())} trial(s)")
        self.ray.ensure()
        self._search(todo)

    def _search(self, todo: dict[int, int]) -> None:
        """``todo``: cell index -> trials still to run. One Tuner; per cell an Optuna study
        (TPE) and ASHA brackets of its own (:class:`~orchestrator.execution.search.CellSearch`)."""
        import ray.tune

        from orchestrator.execution.recorder import Job, Recorder  # deferred: pulls Ray (module docstring)
        from orchestrator.execution.search import CellASHA, CellHalving, CellSearch, cell_search, cell_seed, search_epochs  # deferred: pulls Ray (module docstring)

        storage = self.ledger.optuna_storage()
        b = self.ls.study.budget
        cells: dict[int, dict[str, Any]] = {}
        searchers, schedulers = {}, {}
        epochs_max = 1
        for index in todo:
            cell = self.cells[index]
            attempt = int(self.ledger.state(cell).get("search_attempts", 0)) + 1
            self.ledger.save_state(cell, search_attempts=attempt)
            base = compose_run(self.ls, cell)
            cells[index] = {"base": base, "run_prefix": f"{self.ls.name}__{cell.id}__search-a{attempt}"}
            epochs = search_epochs(cell, base)
            epochs_max = max(epochs_max, epochs)
            study_name = self.ls.optuna_study_name(cell)
            n_before = close_stale_optuna(storage, study_name, self.results.select(cell=cell.id))
            if self.uid:
                self.ledger.claim_optuna(storage, study_name, self.uid)
            searchers[index], schedulers[index] = cell_search(
                cell, storage=storage, study_name=study_name, seed=cell_seed(b.seed, cell.id, n_before), epochs=epochs, budget=b,
                n=self._targets(cell), prior=self.results.select(cell=cell.id, phase=SEARCH),
            )

        def search_job(index: int, params: dict) -> Job:
            cell = self.cells[index]
            return Job(cell, self._cell_run(cell), [merge_params(cells[index]["base"], params)], params)

        self.recorder = Recorder(
            study=self.ls, phase=SEARCH, tracker=self.tracker, results=self.results, progress=self.progress,
            common_tags=self.tags, storage_path=self.ls.storage_path, git=self.git, epochs=epochs_max,
            search_job=search_job, on_recorded=self._search_recorded,
        )
        spec = dataclasses.replace(self._spec("search"), cells=cells)
        tuner = ray.tune.Tuner(
            trainable(self.ls, spec),
            tune_config=ray.tune.TuneConfig(
                search_alg=CellSearch(searchers, todo, metric="dev_primary", mode="max"),
                scheduler=CellHalving(schedulers) if b.scheduler == "halving" else CellASHA(schedulers),
                num_samples=sum(todo.values()),
                max_concurrent_trials=b.max_concurrent,
                time_budget_s=b.time_budget_s,
                # local-mode trial processes are reused: torch, transformers, the backbone and
                # the tokenized splits stay loaded (see RaySession.train_env for the reset timeout)
                reuse_actors=local_trials(self.ls),
            ),
            run_config=tune_run_config(self.ls, f"{self.ls.name}__search-a{self.ledger.bump('search_attempts')}", self.recorder),
        )
        tuner.fit()
        self.recorder = None

    def _search_recorded(self, cell: Cell) -> None:
        """After each search row: a cell whose trials are all in has its selection now."""
        n = len(self.results.select(cell=cell.id, phase=SEARCH))
        if n < self._targets(cell) or self.ledger.state(cell).get("search_done_rows") == n:
            return
        best, source, params = self._selection(cell)
        self.ledger.save_state(cell, best_trial=source if best else None, best_params=params,
                               best_dev=best["dev_primary"] if best else None, search_done_rows=n)
        self.progress.cell_end(cell.id, selection_line(best, params))

    # ------------------------------------------------------------------ phase 2: final seeds

    def final_jobs(self) -> list[Job]:
        """One job per cell with final seeds left: its selected configuration x those seeds,
        under its cell run (opened, the selection logged). Cells with none left finish here."""
        from orchestrator.execution.recorder import Job  # deferred: pulls Ray (module docstring)

        jobs: list[Job] = []
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
            run = self._cell_run(cell)
            self._log_selection(cell, run, source, params)
            if cell.method.search:
                self._log_search_plots(cell, run)
            jobs.append(Job(cell, run, [compose_run(self.ls, cell, params, seed=s) for s in seeds], params, source))
        return jobs

    def finals(self) -> None:
        """Every cell's selected configuration x its missing seeds, as one Tuner (lanes stay full)."""
        jobs = self.final_jobs()
        if not jobs:
            return
        todo = [job.cell for job in jobs]
        packs = self._longest_first(pack_runs(jobs, self.ls.study.final.runs_per_trial))
        name = f"{self.ls.name}__final-a{self.ledger.bump('final_attempts')}"
        n_runs = sum(len(j.runs) for j in jobs)
        self.progress.cell_start("final", f"{len(todo)} cell(s)", f"{n_runs} run(s) in {len(packs)} trial(s)")
        self.ray.ensure()
        import ray.tune

        from orchestrator.execution.recorder import Recorder  # deferred: pulls Ray (module docstring)

        spec = dataclasses.replace(self._spec("final"), jobs=tuple(
            {"runs": [v for job in pack for v in job.runs], "run_prefix": f"{name}__p{k:03d}"} for k, pack in enumerate(packs)
        ))
        self.recorder = Recorder(
            study=self.ls, phase=FINAL, tracker=self.tracker, results=self.results, progress=self.progress,
            common_tags=self.tags, storage_path=self.ls.storage_path, git=self.git, packs=packs,
            epochs=int(jobs[0].runs[0].get("epochs", 10)), on_recorded=self._on_final_recorded,
        )
        tuner = ray.tune.Tuner(
            trainable(self.ls, spec),
            param_space={"job": ray.tune.grid_search(list(range(len(packs))))},
            tune_config=ray.tune.TuneConfig(max_concurrent_trials=self.ls.study.budget.max_concurrent, reuse_actors=local_trials(self.ls)),
            run_config=tune_run_config(self.ls, name, self.recorder),
        )
        tuner.fit()
        self.recorder = None
        for cell in todo:
            if cell.id in self.cell_runs:  # not finished by the callback: a seed failed
                self._finish_cell(cell, announce=True)

    def _longest_first(self, packs: list[list[Job]]) -> list[list[Job]]:
        """Packs in decreasing expected duration, so the short ones fill the lanes at the end
        instead of a long one running alone (longest-processing-time-first scheduling). A run's
        expected duration: its selected search run's wall time per epoch (else its cell's
        search runs' mean per epoch) x the run's epochs, so an ASHA-stopped trial's one epoch
        does not make an expensive cell look cheap; where no cell searched (fixed
        configurations), its training examples x epochs (:func:`static_cost`), which ranks a
        multi-task run above a single task's and a few-shot run below both."""
        per_epoch: dict[str, dict[str, float]] = {}  # cell -> trial id -> search wall seconds per epoch
        for c in self.cells:
            for r in self.results.select(cell=c.id, phase=SEARCH):
                if r.get("wall_s") is not None and r.get("epochs_run"):
                    per_epoch.setdefault(c.id, {})[str(r.get("trial_id"))] = float(r["wall_s"]) / float(r["epochs_run"])

        def expected(job: Job, values: dict[str, Any]) -> float:
            mine = per_epoch.get(job.cell.id, {})
            rate = mine.get(str(job.source_trial)) or (statistics.fmean(mine.values()) if mine else 0.0)
            return rate * float(values.get("epochs") or 1)

        cost = expected if per_epoch else (lambda job, values: static_cost(values))
        return sorted(packs, key=lambda pack: -sum(cost(j, v) for j in pack for v in j.runs))  # stable for ties

    def _on_final_recorded(self, cell: Cell) -> None:
        """After each final run's row: a cell whose seeds are all in is done now."""
        _, source, _ = self._selection(cell)
        if not self._seeds_left(cell, source) and cell.id in self.cell_runs:
            self._finish_cell(cell, announce=True)
