"""The output directory as the study's record: what a run wrote there, and what ``--resume`` trusts.

Resume (``--resume``) is built on two ledgers in the output dir, not on Tune's experiment
snapshots (which lag behind after ``kill -9`` and would re-run finished trials):

* ``results.csv``: a row is written the moment a run finishes. A cell's search needs
  ``trials_per_cell`` rows, its final one row per seed (for the currently best config).
  Whatever has a row is never run again; what is missing is run now.
* ``optuna.db`` (or ``tracking.optuna_storage``, e.g. a PostgreSQL database): each cell's
  Optuna study (``<study>/<cell>``). A resumed search loads it, so TPE conditions on every
  trial told so far; trials left RUNNING by a crash are marked FAIL first
  (:func:`close_stale_optuna`), and the sampler is re-seeded with ``seed + number of trials
  so far`` so a resumed search draws new points rather than replaying the first ones.
  Raising ``trials_per_cell`` (or adding seeds, backbones, tasks, methods) and resuming
  *extends* a study the same way.

Beside them (:class:`OutputDir`): ``.lock`` (one driver per output dir), ``study.json``
(the study's name, its id and every invocation; the id marks the MLflow experiment and the
Optuna studies as this directory's, so two output dirs never share them in one database),
``plan.json`` and ``study.yaml`` (the plan and the study file as run), and ``state/``:
``<cell>.json`` per cell (search attempts, the selection, done) and ``_study.json`` (attempt
counters that keep the Tune experiment names stable across resumes).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ptcore.fileio import write_json_atomic, write_text_atomic

from orchestrator.common.retry import StoreRetry, retrying_optuna_storage
from orchestrator.common.stores import redact
from orchestrator.ledger import results as R
from orchestrator.ledger.results import SEARCH
from orchestrator.study import StudyError

if TYPE_CHECKING:
    from orchestrator.study import Cell, LoadedStudy


OWNER, OWNER_DIR = "ptcore.study_uid", "ptcore.output_dir"  # the tags/attributes that mark a study's stores as its own


def pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, TypeError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def output_dir_busy(path: Path, pid: Any) -> str:
    """The one line for a second driver on a study's output dir."""
    who = f" (pid {pid})" if pid else ""
    return (f"{path}: another `orchestrate study`{who} is running on this output dir; "
            f"wait for it to finish (or stop it), or pass --output-dir DIR for a separate study")


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

    def snapshot(self, resume: bool, say: Callable[[str], None]) -> str:
        """The study file and plan as run, plus a history of invocations. Returns the output
        dir's study id (:meth:`uid`), made on its first run."""
        import uuid

        self.path.mkdir(parents=True, exist_ok=True)
        manifest_path = self.path / "study.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"name": self.ls.name, "invocations": []}
        manifest.setdefault("uid", uuid.uuid4().hex)
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
        return manifest["uid"]

    # ------------------------------------------------------------------ the ledgers

    def results(self) -> R.ResultsTable:
        return R.ResultsTable(self.path / "results.csv")

    def optuna_storage(self):
        """The cells' Optuna studies (``tracking.optuna_storage``: ``optuna.db`` here by
        default, or a PostgreSQL database), Optuna's own logging quieted."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # pre-ping: a study outlives idle connections a database server or a proxy closes
        storage = optuna.storages.RDBStorage(self.ls.optuna_storage, engine_kwargs={"pool_pre_ping": True})
        # every write the driver makes (TPE's asks and tells, our own marks) rides out an outage of tracking.outage_s
        retry = StoreRetry("optuna", redact(self.ls.optuna_storage), self.ls.study.tracking.outage_s)
        return retrying_optuna_storage(storage, retry)

    def optuna_exists(self) -> bool:
        """Whether the Optuna storage may hold studies (a sqlite file not yet made holds none)."""
        url = self.ls.optuna_storage
        return not url.startswith("sqlite:///") or Path(url[len("sqlite:///") :]).is_file()

    def reconcile_optuna(self, cells: list[Cell], results: R.ResultsTable) -> None:
        """After a crash or Ctrl-C, Optuna trials left RUNNING: COMPLETE if results.csv has
        the run (the row was written, Tune had not told Optuna yet), else FAIL."""
        if not self.optuna_exists():
            return
        storage = self.optuna_storage()
        for cell in cells:
            close_stale_optuna(storage, self.ls.optuna_study_name(cell), results.select(cell=cell.id))

    # ------------------------------------------------------------------ a shared database: whose studies these are

    def uid(self) -> Optional[str]:
        """This output directory's study id (``study.json``; None before its first run). The
        MLflow experiment and the Optuna studies it writes carry it (:data:`OWNER`), so a
        second output directory of a study with the same name never writes into them."""
        manifest = self.path / "study.json"
        return json.loads(manifest.read_text()).get("uid") if manifest.is_file() else None

    def owner(self, uid: str) -> dict[str, str]:
        return {OWNER: uid, OWNER_DIR: str(self.path)}

    def check_owner(self, cells: list[Cell], experiment_owner: Callable[[str, str], Optional[tuple[str, str]]]) -> None:
        """Refuse stores (a shared database) whose experiment or Optuna studies of this name
        belong to another output directory, before anything is written or started: resuming
        from here would close that study's running MLflow runs and fail its running Optuna
        trials, and TPE would learn from its trials. ``experiment_owner(uri, experiment)``
        reads the MLflow experiment's owner tags (:func:`orchestrator.tracking.tracker.experiment_owner`;
        passed in: the ledger does not import tracking, which mirrors it)."""
        uid = self.uid()
        uri = self.ls.mlflow_uri
        if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).is_file():
            theirs = experiment_owner(uri, self.ls.experiment_name)
            if theirs and theirs[0] != uid:
                raise StudyError(
                    f"{self.ls.path or self.path}: tracking.experiment: MLflow experiment {self.ls.experiment_name!r} in "
                    f"{redact(uri)} belongs to the study in {theirs[1]}; resume that one (--output-dir {theirs[1]} --resume), "
                    f"or give this one an experiment of its own (tracking.experiment)"
                )
        if self.optuna_exists():
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            names = {self.ls.optuna_study_name(c) for c in cells}
            for s in optuna.get_all_study_summaries(self.optuna_storage(), include_best_trial=False):
                theirs = s.user_attrs.get(OWNER)
                if s.study_name in names and theirs and theirs != uid:
                    raise StudyError(
                        f"{self.ls.path or self.path}: name: the Optuna storage {redact(self.ls.optuna_storage)} holds study "
                        f"{s.study_name!r} of the study in {s.user_attrs.get(OWNER_DIR)}; resume that one "
                        f"(--output-dir {s.user_attrs.get(OWNER_DIR)} --resume), or rename this study (name) or point "
                        f"tracking.optuna_storage at another database"
                    )

    def claim_optuna(self, storage, study_name: str, uid: str) -> None:
        """Create a cell's Optuna study (as Tune's OptunaSearch would: maximize) and mark it ours."""
        import optuna

        study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", load_if_exists=True)
        for k, v in self.owner(uid).items():
            if study.user_attrs.get(k) != v:
                study.set_user_attr(k, v)

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
    dev = {str(r["trial_id"]): r.get("dev_primary") for r in rows if r.get("phase") == SEARCH}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        value = dev.get(str(t.user_attrs.get("tune_trial_id")))
        if value is not None:
            storage.set_trial_state_values(t._trial_id, TrialState.COMPLETE, [float(value)])
        else:
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False))
