"""One Tune search over many cells: a searcher and a scheduler that keep each cell apart.

Every cell (backbone x task x method) has its own Optuna study (TPE, seeded, persisted in
the study's Optuna storage: ``optuna.db`` or a PostgreSQL database, ``tracking.optuna_storage``;
named ``<study name>/<cell id>``) and its own ASHA brackets: a cell's trials are compared only with each
other (an RTE trial is never stopped because a CB trial scored higher). They still share
*one* Tuner, so the ``max_concurrent`` lanes stay busy across cell boundaries (a Tuner
per cell idles lanes at every boundary and pays a Tuner start-up per cell).

A trial's config is the cell's searched values plus ``CELL_KEY`` (the cell's index).
Cells are served in study order: a cell's trials are suggested before the next cell's,
so cells finish one after another while trials of neighbouring cells overlap.

:func:`cell_search` builds a cell's pair: an ``OptunaSearch`` over the cell's search space
(:func:`optuna_space`; TPE seeded by :func:`cell_seed`: the study seed and the cell's id, so
cells with the same space do not all draw the same first points, plus the trials its Optuna
study already holds, so a resumed search draws new points) and an ``ASHAScheduler`` on ``dev_primary``.
The Optuna studies themselves are a ledger of the output dir (:mod:`orchestrator.ledger.outdir`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator.execution.trial import CELL_KEY  # index of the trial's cell in the study's cell list
from orchestrator.ledger.halving import Halving, rungs

if TYPE_CHECKING:
    from orchestrator.study import Cell


class CellSearch(Searcher):
    """Routes suggestions and results to one searcher per cell.

    ``searchers``: cell index -> Tune searcher (OptunaSearch) for that cell;
    ``budget``: cell index -> trials still to run for it (cells in dict order).
    """

    def __init__(self, searchers: dict[int, Searcher], budget: dict[int, int], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.searchers = searchers
        self.budget = dict(budget)
        self.owner: dict[str, int] = {}  # Tune trial id -> cell index

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec) -> bool:
        return True  # every cell searcher was built with its space, metric and mode

    def suggest(self, trial_id: str) -> Optional[dict]:
        for cell, left in self.budget.items():
            if left <= 0:
                continue
            params = self.searchers[cell].suggest(trial_id)
            if params is None or params == Searcher.FINISHED:  # pragma: no cover - Optuna always answers
                continue
            self.budget[cell] -= 1
            self.owner[trial_id] = cell
            return {**params, CELL_KEY: cell}
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        cell = self.owner.pop(trial_id, None)
        if cell is not None:
            self.searchers[cell].on_trial_complete(trial_id, result=result, error=error)

    # Resume does not go through Tune's experiment snapshots: results.csv and the Optuna
    # storage are the ledgers (see orchestrator.ledger.outdir). Nothing to pickle here.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - never restored
        pass


class CellHalving(FIFOScheduler):
    """Successive halving per cell, decided from the cell's dev scores alone
    (:class:`orchestrator.ledger.halving.Halving`): a trial is stopped once halving's verdict on it is
    certain, whatever order the trials report in. ``cells``: cell index -> its ``Halving``."""

    def __init__(self, cells: dict[int, Halving]):
        super().__init__()
        self.cells = cells
        self.stopped = 0

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        return True

    def _of(self, trial):
        return self.cells.get(trial.config.get(CELL_KEY))

    @staticmethod
    def _tiebreak(trial) -> str:
        import json

        return json.dumps({k: v for k, v in trial.config.items() if k != CELL_KEY}, sort_keys=True, default=str)

    def on_trial_add(self, tune_controller, trial) -> None:
        h = self._of(trial)
        if h is not None:
            h.add(trial.trial_id, 0, None, tiebreak=self._tiebreak(trial))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        h = self._of(trial)
        if h is None or result.get("final"):  # a run's final report carries its best epoch, not an epoch's score
            return TrialScheduler.CONTINUE
        h.add(trial.trial_id, int(result.get("epoch", 0)), result.get("dev_primary"), tiebreak=self._tiebreak(trial))
        if h.stopped(trial.trial_id):
            self.stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_error(self, tune_controller, trial) -> None:
        h = self._of(trial)
        if h is not None:
            h.fail(trial.trial_id)

    def debug_string(self) -> str:
        return f"successive halving per cell ({len(self.cells)} cells): {self.stopped} trial(s) stopped early"

    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - never restored
        pass


class CellASHA(FIFOScheduler):
    """ASHA per cell: ``schedulers`` maps a cell index to its own ``ASHAScheduler``.

    What it needs to know is counted here, in Tune's public hooks, not read from ASHA's private
    state: ``live``, the trials handed to a cell's ASHA and not yet completed or removed (ASHA's
    hooks fail with a KeyError on a trial it no longer holds), and ``stopped``, the STOP
    decisions ASHA returned (what its own ``num_stopped`` counts)."""

    def __init__(self, schedulers: dict[int, ASHAScheduler]):
        super().__init__()
        self.schedulers = schedulers
        self.live: set[str] = set()
        self.stopped = 0

    def _of(self, trial) -> Optional[ASHAScheduler]:
        return self.schedulers.get(trial.config.get(CELL_KEY))

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        s = self._of(trial)
        if s is not None:
            s.on_trial_add(tune_controller, trial)
            self.live.add(trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        s = self._of(trial)
        if s is None or trial.trial_id not in self.live:
            return TrialScheduler.CONTINUE
        action = s.on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        s = self._of(trial)
        if s is not None and trial.trial_id in self.live:
            self.live.discard(trial.trial_id)
            s.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        s = self._of(trial)
        if s is not None and trial.trial_id in self.live:
            self.live.discard(trial.trial_id)
            s.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per cell ({len(self.schedulers)} cells): {self.stopped} trial(s) stopped early"

    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:  # pragma: no cover - never restored
        pass


# ------------------------------------------------------------------ one cell's searcher and scheduler


def optuna_space(search: dict) -> dict:
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


class _Search(OptunaSearch):
    """OptunaSearch that records the Tune trial id on each Optuna trial (to cross-reference:
    :mod:`orchestrator.ledger.outdir` matches the Optuna trials of a resumed search to its rows).

    Public API only: the space is handed to Ray as a define-by-run function (:meth:`_define`),
    which receives the Optuna trial, and :meth:`suggest` tells it the Tune trial id first. The
    function suggests the same distributions in the same order as Ray's ``ask(fixed_distributions=
    space)`` does for a dict space, so a seeded sampler draws the same points."""

    def __init__(self, *, space: dict, **kwargs):
        self.distributions = dict(space)
        self.asking: Optional[str] = None  # the Tune trial id being suggested for
        super().__init__(space=self._define, **kwargs)

    def _define(self, ot_trial) -> None:
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                ot_trial.suggest_categorical(name, dist.choices)
            elif isinstance(dist, IntDistribution):
                ot_trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                ot_trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        if self.asking is not None:
            try:
                ot_trial.set_user_attr("tune_trial_id", self.asking)
            except Exception:  # pragma: no cover - optional bookkeeping
                pass

    def suggest(self, trial_id):
        self.asking = trial_id
        try:
            return super().suggest(trial_id)
        finally:
            self.asking = None


def search_epochs(cell: Cell, base: dict[str, Any]) -> int:
    """The most epochs a search run of the cell trains (the top of a searched ``epochs``)."""
    epochs = int(base.get("epochs", 10))
    if "epochs" in cell.method.search:
        sp = cell.method.search["epochs"]
        epochs = int(max(sp.values) if sp.type == "choice" else sp.high)
    return epochs


def cell_seed(seed: int, cell_id: str, n_before: int = 0) -> int:
    """The TPE seed of one cell: stable across runs and machines (CRC32, not ``hash``), other
    for every cell. With a handful of trials per cell TPE is still in its random start-up,
    and one seed for all cells would try the same few configurations in every cell."""
    import zlib

    return (seed + zlib.crc32(cell_id.encode()) + n_before) % 2**31


def cell_search(cell: Cell, *, storage, study_name: str, seed: int, epochs: int, budget, n: int = 0,
                prior: Optional[list[dict]] = None) -> tuple[Searcher, Any]:
    """A cell's Optuna searcher (TPE with ``seed``, its study ``study_name`` in ``storage``)
    and its early stopping: with ``budget.scheduler == 'halving'`` a
    :class:`~orchestrator.ledger.halving.Halving` over the cell's ``n`` trials, which already knows the
    curves of the cell's ``prior`` search rows (a resumed search); with 'asha' Ray's
    ``ASHAScheduler`` (``budget``: the grace period and reduction factor)."""
    import optuna

    searcher = _Search(
        space=optuna_space(cell.method.search),
        metric="dev_primary",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=seed),
        study_name=study_name,
        storage=storage,
    )
    if getattr(budget, "scheduler", "asha") == "halving":
        return searcher, halving_for(epochs, budget, n, prior or [])
    scheduler = ASHAScheduler(
        time_attr="epoch", metric="dev_primary", mode="max", max_t=epochs + 1,  # +1: the last epoch's report is never a stop
        grace_period=budget.grace_period, reduction_factor=budget.reduction_factor,
    )
    return searcher, scheduler


def halving_for(epochs: int, budget, n: int, prior: list[dict]) -> Halving:
    """A cell's :class:`~orchestrator.ledger.halving.Halving`: its rungs below ``epochs``, ``n`` trials in
    all, and the per-epoch dev scores of the search rows it already has in the ledger."""
    h = Halving(n=n, milestones=rungs(epochs, budget.grace_period, budget.reduction_factor),
                reduction_factor=budget.reduction_factor)
    for r in prior:
        h.add_row(f"ledger:{r.get('trial_id')}:{r.get('run_index') or 0}", r)
    return h
