"""The output directory as the study's record: what a run wrote there, and what ``--resume`` trusts.

Resume (``--resume``) is built on two ledgers in the output dir, not on Tune's experiment
snapshots (which lag behind after ``kill -9`` and would re-run finished trials):

* ``results.csv``: a row is written the moment a run finishes. A cell's search needs
  ``trials_per_cell`` rows, its final one row per seed (for the currently best config).
  Whatever has a row is never run again; what is missing is run now.
* ``optuna.db``: each cell's Optuna study (``<study>/<cell>``). A resumed search loads it,
  so TPE conditions on every trial told so far; trials left RUNNING by a crash are marked
  FAIL first (:func:`close_stale_optuna`), and the sampler is re-seeded with ``seed +
  number of trials so far`` so a resumed search draws new points rather than replaying the
  first ones. Raising ``trials_per_cell`` (or adding seeds, backbones, tasks, methods) and
  resuming *extends* a study the same way.

Beside them (:class:`OutputDir`): ``.lock`` (one driver per output dir), ``study.json``
(the study's name and every invocation), ``plan.json`` and ``study.yaml`` (the plan and
the study file as run), and ``state/``: ``<cell>.json`` per cell (search attempts, the
selection, done) and ``_study.json`` (attempt counters that keep the Tune experiment names
stable across resumes).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ptcore.fileio import write_json_atomic, write_text_atomic

from . import results as R
from .raysession import output_dir_busy
from .study import StudyError

if TYPE_CHECKING:
    from .study import Cell, LoadedStudy


def existing_work(out: Path) -> int:
    """How many finished runs an output dir holds (0: a fresh study)."""
    path = out / "results.csv"
    if not path.is_file():
        return 0
    return len(R.ResultsTable(path).rows)


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
            try:
                pid = os.read(self.fd, 64).decode(errors="replace").strip()
            finally:
                os.close(self.fd)
                self.fd = None
            raise StudyError(output_dir_busy(self.path.parent, pid if pid.isdigit() else None)) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


class OutputDir:
    """A study's output directory: lock, checks, snapshot, the two ledgers and ``state/``."""

    def __init__(self, ls: LoadedStudy):
        self.ls = ls
        self.path = ls.output_dir

    # ------------------------------------------------------------------ before a run

    def lock(self) -> _Lock:
        return _Lock(self.path / ".lock")

    def check(self, resume: bool) -> None:
        """Refuse another study's directory, and finished work without ``--resume``."""
        manifest = self.path / "study.json"
        if manifest.is_file():
            other = json.loads(manifest.read_text()).get("name")
            if other and other != self.ls.name:
                raise StudyError(f"{self.path} holds study {other!r}, not {self.ls.name!r}; choose another output_dir")
        n = existing_work(self.path)
        if n and not resume:
            raise StudyError(
                f"{self.path} already holds {n} finished run(s) of study {self.ls.name!r}; "
                f"pass --resume to continue it, or set another output_dir (or delete that directory)"
            )

    def snapshot(self, resume: bool, say: Callable[[str], None]) -> None:
        """The study file and plan as run, plus a history of invocations."""
        self.path.mkdir(parents=True, exist_ok=True)
        manifest_path = self.path / "study.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"name": self.ls.name, "invocations": []}
        prev = manifest["invocations"][-1]["file_hash"] if manifest["invocations"] else None
        if prev and prev != self.ls.file_hash:
            say(f"note: the study file changed since the last run ({prev} -> {self.ls.file_hash}); finished runs are kept")
        manifest["invocations"].append(
            {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "file": str(self.ls.path), "file_hash": self.ls.file_hash, "resume": resume}
        )
        write_json_atomic(manifest_path, manifest)
        write_json_atomic(self.path / "plan.json", self.ls.plan())
        if self.ls.path is not None and self.ls.path.is_file():
            write_text_atomic(self.path / "study.yaml", self.ls.path.read_text())

    # ------------------------------------------------------------------ the ledgers

    def results(self) -> R.ResultsTable:
        return R.ResultsTable(self.path / "results.csv")

    def optuna_storage(self):
        """The cells' Optuna studies (``optuna.db``), Optuna's own logging quieted."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.storages.RDBStorage(f"sqlite:///{self.path / 'optuna.db'}")

    def reconcile_optuna(self, cells: list[Cell], results: R.ResultsTable) -> None:
        """After a crash or Ctrl-C, Optuna trials left RUNNING: COMPLETE if results.csv has
        the run (the row was written, Tune had not told Optuna yet), else FAIL."""
        if not (self.path / "optuna.db").is_file():
            return
        storage = self.optuna_storage()
        for cell in cells:
            close_stale_optuna(storage, f"{self.ls.name}/{cell.id}", results.select(cell=cell.id))

    # ------------------------------------------------------------------ state/

    def state(self, cell: Cell) -> dict:
        p = self.path / "state" / f"{cell.id}.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def save_state(self, cell: Cell, **updates) -> dict:
        state = {**self.state(cell), **updates}
        write_json_atomic(self.path / "state" / f"{cell.id}.json", state)
        return state

    def study_state(self) -> dict:
        p = self.path / "state" / "_study.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def save_study_state(self, **updates) -> None:
        write_json_atomic(self.path / "state" / "_study.json", {**self.study_state(), **updates})

    def bump(self, key: str) -> int:
        """A study-level attempt counter (stable Tune experiment names across resumes)."""
        n = int(self.study_state().get(key, 0)) + 1
        self.save_study_state(**{key: n})
        return n


def close_stale_optuna(storage, study_name: str, rows: list[dict]) -> int:
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
