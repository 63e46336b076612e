"""Successive halving whose decisions do not depend on the order trials report in.

Ray's ASHA decides at each rung against the trials that happen to have reported it
already, so which trial a cell stops, and so which configuration it selects, changes with
the wall-clock order of its lanes: the same study file, run twice, selected different
configurations in three cells of the default study. Here every decision is a function of
the cell's per-epoch dev scores alone (synchronous successive halving, Jamieson &
Talwalkar 2016, applied as soon as it is known):

* the rungs are the epochs ``grace, grace·η, grace·η², …`` below the last epoch (the last
  epoch's report is never a stop, as in ASHA with ``max_t = epochs + 1``);
* all ``n`` trials of a cell enter rung 0; of the ``n_j`` trials that enter rung ``j``,
  the best ``ceil(n_j / η)`` by their dev score at that epoch go on to rung ``j + 1``
  (ties: the higher score wins, then the configuration that sorts first, so no tie is
  broken by arrival);
* a trial is stopped as soon as its fate is certain: at rung 0 once ``ceil(n/η)`` other
  trials beat it there; at a later rung once every trial of the rung before has been
  decided and ``keep`` others beat it. A trial whose fate is not yet certain keeps
  training, so a stop can come some epochs after its rung;
* selection (:func:`select`) reads each trial's curve only up to the rung where halving
  stops it, so a trial that ran on while the others caught up is judged as if it had
  stopped on time. Stops, curves and selection are therefore the same in every run of the
  study, whatever the lanes' timing; only the compute spent on late stops varies.

Nothing here imports Ray: the Tune scheduler (:class:`orchestrator.execution.search.CellHalving`) and
the selection over the ledger (:func:`orchestrator.ledger.results.best_search_row`) both call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Optional, Sequence

from orchestrator.ledger.statuses import ERROR


def rungs(epochs: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which halving decides: ``ceil(grace · η^k)`` strictly below ``epochs``."""
    out: list[int] = []
    m = float(max(1, int(grace_period)))
    while math.ceil(m - 1e-9) < int(epochs):
        e = math.ceil(m - 1e-9)
        if not out or e > out[-1]:
            out.append(e)
        m *= float(reduction_factor)
    return out


@dataclass
class Halving:
    """One cell's halving state. ``n``: the trials the cell runs in all (its budget);
    ``tiebreak``: trial -> a sort key that orders tied scores without looking at time."""

    n: int
    milestones: list[int]
    reduction_factor: float
    scores: dict[Hashable, dict[int, float]] = field(default_factory=dict)  # trial -> {epoch: dev score}
    failed: set = field(default_factory=set)  # trials that ended without reaching their next rung
    tiebreak: dict[Hashable, str] = field(default_factory=dict)

    def add(self, trial: Hashable, epoch: int, score: Optional[float], tiebreak: str = "") -> None:
        self.tiebreak.setdefault(trial, tiebreak)
        if score is not None and not (isinstance(score, float) and math.isnan(score)):
            self.scores.setdefault(trial, {})[int(epoch)] = float(score)
        else:
            self.scores.setdefault(trial, {})

    def fail(self, trial: Hashable) -> None:
        """A trial that ended (error) before its remaining rungs: it loses every rung it did not reach."""
        self.scores.setdefault(trial, {})
        self.failed.add(trial)

    def _key(self, trial: Hashable, epoch: int) -> tuple:
        s = self.scores.get(trial, {}).get(epoch)
        return (-(s if s is not None else -math.inf), self.tiebreak.get(trial, ""), str(trial))

    def decide(self) -> dict[Hashable, Optional[int]]:
        """trial -> the rung epoch where halving stops it; None: it survives every rung
        decided so far (and is not known to stop); absent: not seen yet."""
        stop: dict[Hashable, Optional[int]] = {t: None for t in self.scores}
        entering = list(self.scores)  # rung 0: every trial seen (and those not seen yet)
        n_enter = max(self.n, len(entering))
        for m in self.milestones:
            keep = math.ceil(n_enter / self.reduction_factor)
            reported = [t for t in entering if m in self.scores[t] or t in self.failed]
            complete = len(reported) == n_enter  # every trial of this rung has a score (or failed)
            ranked = sorted(reported, key=lambda t: self._key(t, m))
            if complete:
                for t in ranked[keep:]:
                    stop[t] = m
                entering = ranked[:keep]
                n_enter = len(entering)
                continue
            # incomplete: a trial is out once `keep` reported trials beat it; nothing enters the next rung yet
            for t in ranked[keep:]:
                stop[t] = m
            break
        return stop

    def stopped(self, trial: Hashable) -> bool:
        return self.decide().get(trial) is not None

    def add_row(self, trial: Hashable, row: Mapping[str, Any]) -> Optional[list]:
        """A search row of the ledger: its per-epoch ``dev_curve`` (returned; None without one),
        its configuration as the tie-break, and a failure where its status is ``error``."""
        curve = _curve(row)
        if curve is None:
            return None
        self.add(trial, 0, None, tiebreak=tiebreak_of(row))
        for e, s in enumerate(curve, start=1):
            self.add(trial, e, s)
        if row.get("status") == ERROR:
            self.fail(trial)
        return curve


def tiebreak_of(row: Mapping[str, Any]) -> str:
    """A search row's configuration as one string (its ``params_json``): orders tied scores."""
    import json

    return str(row.get("params_json") or json.dumps(row.get("params") or {}, sort_keys=True))


def _curve(row: Mapping[str, Any]) -> Optional[list[Optional[float]]]:
    import json

    raw = row.get("dev_curve")
    if raw is None or raw == "":
        return None
    try:
        curve = json.loads(raw) if isinstance(raw, str) else list(raw)
    except (TypeError, ValueError):
        return None
    return curve if isinstance(curve, list) else None


def select(rows: Sequence[Mapping[str, Any]], epochs: int, grace_period: int, reduction_factor: float,
           n: Optional[int] = None) -> Optional[Mapping[str, Any]]:
    """The selected search row of one cell: the best dev score of each trial's curve read up
    to the rung where halving stops it (ties: the configuration that sorts first), among
    rows with a curve. None when no row has one (older ledgers: the caller falls back)."""
    h = Halving(n=n or 0, milestones=rungs(epochs, grace_period, reduction_factor), reduction_factor=reduction_factor)
    curves = {i: c for i, r in enumerate(rows) if (c := h.add_row(i, r)) is not None}
    if not curves:
        return None
    stops = h.decide()
    best, best_key = None, None
    for i, c in curves.items():
        if rows[i].get("status") == ERROR:
            continue  # its curve counts in the halving, never as the selection
        upto = stops.get(i) or len(c)
        seen = [s for s in c[:upto] if s is not None]
        if not seen:
            continue
        key = (-max(seen), h.tiebreak.get(i, ""), i)
        if best_key is None or key < best_key:
            best, best_key = i, key
    return None if best is None else rows[best]
