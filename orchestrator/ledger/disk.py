"""What a study's output directory holds, and pruning what Ray leaves there that nothing reads.

A study writes Ray Train runs into its Ray storage (``<output_dir>/ray`` by default), one per
trial, named ``<study>__<cell>__search-a<k>__<trial id>`` (search) and
``<study>__final-a<k>__p<pack>__<trial id>`` (final seeds), holding the checkpoints the trial
reported. None of them is read once the trial has ended:

* ``--resume`` trusts the two ledgers, ``results.csv`` and the Optuna storage
  (:mod:`orchestrator.ledger.outdir`), never Ray's checkpoints or Tune's snapshots;
* a final run's checkpoint is logged to MLflow (``mlartifacts/``) the moment it reports
  (:class:`~orchestrator.execution.recorder.Recorder`), and the report reads ``results.csv`` and
  ``predictions/``;
* search runs' checkpoints (the selected epoch's weights; every epoch's with worker groups
  or ``checkpoint_every_epoch``) have no reader at all: the selected configuration re-runs.

So a trial's Train run is deleted when the trial ends (:func:`prune_train_runs` with its
trial id, called by the Recorder), and every invocation sweeps its study's Train runs when it
ends, catching those of attempts a ``kill -9`` cut short. Tune's experiment directories
(``<study>__search-a<k>``, ``<study>__final-a<k>``: experiment state, each trial's error
file) stay: they are small and ``ray.tune.ExperimentAnalysis`` reads them.
``ray.keep_train_checkpoints: true`` keeps everything; remote storage (``s3://...``) is
left alone.

:func:`usage` / :func:`usage_line` report the output directory's size by part (the end of
every ``orchestrate study`` prints the line).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from orchestrator.common.files import tree_size

if TYPE_CHECKING:
    from orchestrator.study import LoadedStudy


def train_run_pattern(study: str, cells: list[str], trial_id: Optional[str] = None) -> re.Pattern:
    """Names of the study's Ray Train runs (of one trial, or of all); Tune's experiment
    directories (``<study>__search-a1``) and another study's runs in a shared storage do not
    match. ``cells``: the study's cell ids (search runs carry theirs)."""
    trial = re.escape(trial_id) if trial_id else r"[^/]+"
    cell = "|".join(re.escape(c) for c in cells) or "(?!)"
    return re.compile(rf"{re.escape(study)}__(?:(?:{cell})__search-a\d+|final-a\d+__p\d+)__{trial}")


def prune_train_runs(ls: "LoadedStudy", trial_id: Optional[str] = None) -> int:
    """Delete the study's Ray Train run directories (those of ``trial_id``, or all) from its
    local Ray storage; returns the bytes freed. Nothing with ``keep_train_checkpoints`` or a
    remote storage path. Best effort: a directory that cannot be deleted is left."""
    if ls.study.ray.keep_train_checkpoints or "://" in ls.storage_path:
        return 0
    root = Path(ls.storage_path)
    if not root.is_dir():
        return 0
    pattern = train_run_pattern(ls.name, [c.id for c in ls.cells()], trial_id)
    freed = 0
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and pattern.fullmatch(entry.name):
                size = tree_size(Path(entry.path))
                shutil.rmtree(entry.path, ignore_errors=True)
                if not os.path.exists(entry.path):
                    freed += size
    return freed


# the parts an output dir holds, in the order a line lists them when sizes tie
PARTS = ("ray", "mlartifacts", "cache", "predictions", "report", "mlflow.db", "optuna.db", "results.csv", "state")


def usage(out: Path) -> dict[str, int]:
    """Bytes per part of an output directory: each of :data:`PARTS` present, and ``other``
    (the snapshot, plan, lock and anything else at the top level)."""
    out = Path(out)
    sizes: dict[str, int] = {}
    if not out.is_dir():
        return sizes
    for entry in sorted(out.iterdir()):
        part = entry.name if entry.name in PARTS else "other"
        sizes[part] = sizes.get(part, 0) + tree_size(entry)
    return sizes


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def usage_line(out: Path, storage_path: Optional[str] = None) -> str:
    """``output dir DIR: 4.2 MB (mlflow.db 1.9 MB, ray 1.3 MB, cache 0.5 MB, ...)``; a Ray
    storage outside the output dir is added as its own part."""
    sizes = usage(out)
    extra = ""
    if storage_path and "://" not in storage_path:
        sp = Path(storage_path)
        try:
            inside = sp.resolve().is_relative_to(Path(out).resolve())
        except OSError:  # pragma: no cover
            inside = True
        if not inside and sp.is_dir():
            extra = f"; Ray storage {sp}: {human(tree_size(sp))}"
    order = {p: i for i, p in enumerate(PARTS)}
    parts = sorted(sizes.items(), key=lambda kv: (-kv[1], order.get(kv[0], len(order))))
    inner = ", ".join(f"{k} {human(v)}" for k, v in parts)
    return f"output dir {out}: {human(sum(sizes.values()))} ({inner}){extra}"
