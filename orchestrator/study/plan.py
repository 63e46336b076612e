"""Cells and the plan: a study's (backbone, task, method[, regime]) cells, each run's raw
RunConfig values, final runs packed into trials, and the dry-run plan."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from orchestrator.common.stores import normalize, redact
from orchestrator.study.schema import BackboneSpec, MethodSpec, Regime, Study
from ptcore.config import split_settings, task_key


@dataclass(frozen=True)
class Cell:
    """One (backbone, task, method) combination."""

    id: str
    index: int
    backbone: BackboneSpec
    model: str  # resolved backbone id / absolute directory
    task: str  # one task, or a multi-task regime's tasks joined by '+'
    method: MethodSpec
    regime: Optional[Regime] = None  # None: the default full regime (cell ids as before regimes existed)

    @property
    def regime_label(self) -> str:
        return self.regime.display() if self.regime is not None else "full"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


@dataclass
class LoadedStudy:
    """A validated study plus where it came from and where it writes."""

    study: Study
    path: Optional[Path]  # the study file (None when built from a dict)
    file_hash: str
    output_dir: Path
    data_dir: Optional[str]  # absolute, or None (ptcore then uses the hub)
    data_source: str  # for the plan: where data_dir came from
    output_source: str = "output_dir"  # what set output_dir, for errors: the study key or --output-dir

    @property
    def name(self) -> str:
        return self.study.name

    def _store(self, uri: Optional[str], default: str) -> str:
        """A store URL as MLflow / Optuna get it: relative sqlite paths against the output
        dir, PostgreSQL with its driver named (:func:`orchestrator.common.stores.normalize`)."""
        if uri:
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
                rel = uri[len("sqlite:///") :]
                if not os.path.isabs(rel):  # relative sqlite paths: against the output dir
                    return f"sqlite:///{(self.output_dir / rel).resolve()}"
            return normalize(uri)
        return f"sqlite:///{self.output_dir / default}"

    @property
    def mlflow_uri(self) -> str:
        return self._store(self.study.tracking.mlflow_uri, "mlflow.db")

    @property
    def optuna_storage(self) -> str:
        """The Optuna storage URL of the cells' studies (default: ``optuna.db`` in the output dir)."""
        return self._store(self.study.tracking.optuna_storage, "optuna.db")

    def optuna_study_name(self, cell: "Cell") -> str:
        """A cell's Optuna study: ``<study name>/<cell id>``, so the studies of many study
        files share one database without colliding."""
        return f"{self.name}/{cell.id}"

    @property
    def experiment_name(self) -> str:
        return self.study.tracking.experiment or self.study.name

    @property
    def storage_path(self) -> str:
        sp = self.study.ray.storage_path
        if not sp:
            return str(self.output_dir / "ray")
        return sp if "://" in sp else str(Path(sp).expanduser().resolve())

    @property
    def cache_dir(self) -> str:
        return str(self.output_dir / "cache")

    def cells(self) -> list[Cell]:
        return make_cells(self.study, self.path)

    def plan(self) -> dict[str, Any]:
        return make_plan(self)


def _resolve_model(model_id: str, base: Optional[Path]) -> str:
    """Local directories may be written relative to the study file."""
    expanded = os.path.expanduser(model_id)
    if base is not None and (model_id.startswith(".") or model_id.startswith("/") or model_id.startswith("~")):
        p = Path(expanded)
        return str(p if p.is_absolute() else (base / p).resolve())
    return model_id


def make_cells(study: Study, path: Optional[Path] = None) -> list[Cell]:
    base = path.parent.resolve() if path is not None else None
    cells: list[Cell] = []
    for bb in study.backbones:
        for regime in study.regimes or [None]:
            if regime is not None and regime.name == "multitask":
                tasks = ["+".join(regime.tasks or study.tasks)]
            else:
                tasks = list(study.tasks)
            for task in tasks:
                for m in study.methods:
                    if not m.runs_on(bb):
                        continue
                    parts = [bb.display(), task_key(task), m.display()] + ([regime.display()] if regime is not None else [])
                    cid = "__".join(_slug(x) for x in parts)
                    cells.append(Cell(cid, len(cells), bb, _resolve_model(bb.id, base), task, m, regime))
    return cells


def final_seeds(study: Study, cell: Cell) -> list[int]:
    """The seeds of a cell's final runs: its regime's ``seeds``, else ``final.seeds``."""
    if cell.regime is not None and cell.regime.seeds is not None:
        return list(cell.regime.seeds)
    return list(study.final.seeds)


def compose_run(ls: "LoadedStudy", cell: Cell, params: Optional[dict[str, Any]] = None, seed: Optional[int] = None) -> dict[str, Any]:
    """The raw RunConfig values of one run of ``cell`` (``params``: searched values)."""
    study = ls.study
    values: dict[str, Any] = {"task": cell.task, "method": cell.method.name, "model": cell.model}
    if cell.backbone.layers is not None:
        values["layers"] = cell.backbone.layers
    if cell.backbone.trust_remote_code:  # only where the study says so (RunConfig's default: off)
        values["trust_remote_code"] = True
    values.update(study.train)
    if cell.regime is not None:  # the regime's sample and settings replace the study's caps
        regime = cell.regime.settings(seed, final_seeds(study, cell), int(study.train.get("seed", 0)))
        if "train_size" in regime:
            values.pop("max_train_examples", None)
        if "dev_size" in regime:
            values.pop("max_dev_examples", None)
        values.update(regime)
    fixed_run, fixed_opts = split_settings(cell.method.fixed)
    p_run, p_opts = split_settings(params or {})
    values.update(fixed_run)
    values.update(p_run)
    values["method_args"] = {**fixed_opts, **p_opts}
    if ls.data_dir is not None:
        values["data_dir"] = ls.data_dir
    if seed is not None:
        values["seed"] = seed
    return values


def pack_runs(jobs: list, per_trial: Optional[int]) -> list[list]:
    """Final jobs (dataclasses with ``.cell`` and ``.runs``, one per cell) packed into trials.

    ``per_trial`` None: one trial per job. Otherwise trials of up to ``per_trial`` runs,
    filled with the runs of cells that share a backbone (one backbone load per trial), in
    study order; a job whose runs straddle two trials is split (``dataclasses.replace``).
    The finals of all cells share one Tuner, so packs keep the lanes busy.
    """
    if per_trial is None:
        return [[job] for job in jobs]
    groups: dict[tuple, list] = {}
    for job in jobs:
        groups.setdefault((job.cell.model, job.cell.backbone.layers), []).append(job)
    packs: list[list] = []
    for group in groups.values():
        pack, size = [], 0
        for job in group:
            runs = list(job.runs)
            while runs:
                take = min(per_trial - size, len(runs))
                pack.append(dataclasses.replace(job, runs=runs[:take]))
                runs, size = runs[take:], size + take
                if size == per_trial:
                    packs.append(pack)
                    pack, size = [], 0
        if pack:
            packs.append(pack)
    return packs


@dataclass
class _PlannedJob:
    cell: Cell
    runs: list


def final_packs(ls: "LoadedStudy") -> list[list]:
    """The plan's final trials: every cell x every final seed, packed as the runner does."""
    return pack_runs([_PlannedJob(c, final_seeds(ls.study, c)) for c in ls.cells()], ls.study.final.runs_per_trial)


def make_plan(ls: LoadedStudy) -> dict[str, Any]:
    cells = ls.cells()
    s = ls.study
    n_search = sum(s.budget.trials_per_cell if c.method.search else 0 for c in cells)
    packs = final_packs(ls)
    return {
        "study": s.name,
        "file": str(ls.path) if ls.path else None,
        "cells": len(cells),
        "backbones": [b.display() for b in s.backbones],
        "tasks": list(s.tasks),
        "methods": [m.display() for m in s.methods],
        "regimes": [r.display() for r in s.regimes] if s.regimes else ["full"],
        "search_trials": n_search,
        "trials_per_cell": s.budget.trials_per_cell,
        "final_seeds": list(s.final.seeds),
        "final_runs": sum(len(final_seeds(s, c)) for c in cells),
        "final_trials": len(packs),
        "trials_total": n_search + len(packs),
        "runs_total": n_search + sum(len(final_seeds(s, c)) for c in cells),
        "max_concurrent": s.budget.max_concurrent,
        "resources": s.resources.model_dump(),
        "output_dir": str(ls.output_dir),
        "data_dir": ls.data_dir,
        "data_source": ls.data_source,
        "mlflow_uri": redact(ls.mlflow_uri),
        "optuna_storage": redact(ls.optuna_storage),
        "ray_address": s.ray.address or os.environ.get("RAY_ADDRESS") or "local",
        "storage_path": ls.storage_path,
    }
