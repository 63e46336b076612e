"""MLflow tracking of a study, from the driver only.

Layout (one experiment per study, created by name with :class:`MlflowClient`; the driver
never calls ``mlflow.set_experiment`` or touches the fluent API's global state)::

    experiment "<study>"           the study's description (mlflow.note.content), kind: model training
    study run "<study>"            ptcore.kind=study, ptcore.phase=study
    └── cell run                   ptcore.kind=cell, ptcore.phase=cell, mlflow.parentRunId
        │  "CB · P-Tuning v2 · MiniLM-L6"       params: the selected configuration (tag ptcore.best_trial:
        │                                      its search trial); metrics: val_mean, val_std, best_dev, final_ok, ...
        ├── search run             ptcore.kind=run, ptcore.phase=search, ptcore.trial_id
        │     "CB · P-Tuning v2 · MiniLM-L6 · trial 1a2b3c4d"
        └── final run (per seed)   ptcore.kind=run, ptcore.phase=final, ptcore.seed (+ checkpoint artifact)
              "CB · P-Tuning v2 · MiniLM-L6 · seed 0"

Names lead with the task, so runs that the UI truncates still differ; a cell outside the
full regime adds its regime (`` · few_shot-32``). Every run carries ``ptcore.task``,
``ptcore.method``, ``ptcore.backbone``, ``ptcore.regime`` and ``ptcore.phase``; cell and
leaf runs ``ptcore.cell`` too (the study run: every value its cells take, comma-joined).
A leaf run's params are its resolved RunConfig (method options by their own names, as in the
study file: ``prompt_length``; ``threads``: the trial's ``cpus_per_worker``), what describes the
trained run (``trainable_params``, ``total_params``, ``checkpoint_bytes``, ``best_epoch``,
``epochs_run``) and what decided its arithmetic (``compute.torch_threads``,
``compute.interop_threads``, ``compute.kernels``, ``compute.device``, ``compute.precision``,
``compute.torch``, ...: result.json's ``compute``); its metrics are what
it measured: per epoch (step = epoch) ``train_loss``, ``lr_schedule`` (the learning rate the
schedule reached; the param ``lr`` is its peak) and ``dev_*``; once, at its end, the selected
epoch's ``best_dev_*``, ``val_*`` / ``test_*``, ``trainable_pct``, ``wall_s`` and ``train_s``.

Why the driver: Ray Tune already ships every epoch's metrics from the Train worker to the
driver (``TuneReportCallback``), so a Tune ``Callback`` in the driver logs them with one
``MlflowClient`` over one store (a SQLite file, a PostgreSQL database or an MLflow server): no
worker needs MLflow credentials or network access to the tracking store, there is a single
writer per study (no SQLite lock contention), and run status is decided where the outcome is
known (finished / failed / interrupted).

Every run ends FINISHED, FAILED or KILLED: on Ctrl-C the driver ends its open runs as
KILLED; after ``kill -9`` the next ``--resume`` marks the stale RUNNING runs KILLED (or
FINISHED when results.csv shows that run had completed).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ptcore.config import flat_settings
from ptcore.tasks import get_task

from orchestrator.common.labels import method_label, task_labels
from orchestrator.common.retry import StoreRetry
from orchestrator.common.stores import redact
from orchestrator.ledger.outdir import OWNER, OWNER_DIR

if TYPE_CHECKING:
    from orchestrator.study import Cell

KIND, CELL, PHASE, TRIAL, RUN_INDEX, SEED = (
    "ptcore.kind",
    "ptcore.cell",
    "ptcore.phase",
    "ptcore.trial_id",
    "ptcore.run_index",
    "ptcore.seed",
)
TASK, METHOD, BACKBONE, REGIME = "ptcore.task", "ptcore.method", "ptcore.backbone", "ptcore.regime"
# on the MLflow experiment (a tag) and each cell's Optuna study (a user attribute): the output
# directory whose study they are (its id, orchestrator.ledger.outdir.OutputDir.uid) and its path
# The experiment's kind, as MLflow 3 classifies experiments: model training, not GenAI. In
# mlflow 3.17.2 the UI's view is chosen by the page's URL (workflowType=machine_learning, which
# `orchestrate ui` prints, see orchestrator.cli.ui.MODEL_TRAINING_VIEW), not by this tag:
# seen in headless Chromium. The tag and value of the UI's ExperimentKind enum (mlflow 3.17.2,
# mlflow/server/js/build/static/js/main.c2f5f8d4.js: CUSTOM_MODEL_DEVELOPMENT="custom_model_development",
# read from the tag "mlflow.experimentKind"; also mlflow/assistant/skills/mlflow-onboarding/SKILL.md)
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"  # an experiment's (or run's) description in the UI


# run settings logged only where set: ``threads`` unset is torch's default, which says nothing;
# a trial's runs set it (orchestrator.execution.worker.with_threads), a cell's selection does not
LOGGED_IF_SET = ("threads",)


def flatten_config(resolved: dict[str, Any]) -> dict[str, str]:
    """The resolved RunConfig as MLflow params, each spelled as the study file spells it
    (:func:`ptcore.config.flat_settings`: ``lr``, ``prompt_length``; a method option named like a
    run setting becomes ``method.<k>``); :data:`LOGGED_IF_SET` settings only where set."""
    flat = flat_settings(resolved)
    return {k: _param_str(v) for k, v in sorted(flat.items()) if not (k in LOGGED_IF_SET and v is None)}


def compute_params(compute: Optional[dict[str, Any]]) -> dict[str, str]:
    """A result's ``compute`` block (threads, kernels, device, precision, torch: what decides the
    arithmetic; :func:`ptcore.runinfo.compute`) as MLflow params ``compute.<key>``; keys without
    a value (``gpu`` on the CPU) are left out."""
    return {f"compute.{k}": _param_str(v) for k, v in sorted((compute or {}).items()) if v is not None}


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]


def cell_title(cell: Cell) -> str:
    """A cell's run name, task first: ``CB · P-Tuning v2 · MiniLM-L6``, its regime appended
    outside the full one; a multi-task cell's tasks joined by '+' (``CB+SST-2``). The labels
    are the report's (:mod:`orchestrator.common.labels`: no torch or matplotlib)."""
    tasks = cell.task.split("+")
    labels = task_labels(tasks)
    parts = ["+".join(labels[t] for t in tasks), method_label(cell.method.display()), cell.backbone.display()]
    if cell.regime_label != "full":
        parts.append(cell.regime_label)
    return " · ".join(parts)


def cell_tags(cell: Cell) -> dict[str, str]:
    """What the cell's run and each of its leaf runs are filtered by in the UI."""
    return {
        CELL: cell.id,
        TASK: cell.task,
        METHOD: cell.method.display(),
        BACKBONE: cell.backbone.display(),
        REGIME: cell.regime_label,
    }


def study_tags(cells: list[Cell]) -> dict[str, str]:
    """The study run's ``ptcore.task`` / ``method`` / ``backbone`` / ``regime``: every value
    its cells take, in study order, comma-joined."""
    keys = (TASK, METHOD, BACKBONE, REGIME)
    values = [cell_tags(c) for c in cells]
    return {PHASE: "study", **{k: ", ".join(dict.fromkeys(v[k] for v in values)) for k in keys}}


def experiment_tags(description: Optional[str]) -> dict[str, str]:
    """The experiment's kind (model training, not GenAI) and the study's description."""
    return {EXPERIMENT_KIND: MODEL_TRAINING, **({NOTE: description} if description else {})}


_DIGESTS: dict[str, tuple[float, int, str]] = {}  # path -> (mtime, size, sha256): each file hashed once per process


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (the first 16 hex digits), remembered while it is unchanged."""
    import hashlib

    st = path.stat()
    known = _DIGESTS.get(str(path))
    if known is None or known[:2] != (st.st_mtime, st.st_size):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        known = (st.st_mtime, st.st_size, h.hexdigest()[:16])
        _DIGESTS[str(path)] = known
    return known[2]


def data_inputs(task: str, data_dir: Optional[str]) -> list:
    """MLflow dataset inputs of a cell's task(s): each official data file the runs read (the
    task's local layout under ``data_dir``), named ``<task>/<file role>``, with its digest, path
    and size; its role (train / val / test) as the input's context tag. None without a data
    directory (the runs read the hub)."""
    if not data_dir:
        return []
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for name in task.split("+"):
        spec = get_task(name)
        root = Path(data_dir) / spec.local.path
        for role, fname in spec.local.files.items():
            path = root / fname
            if not path.is_file():
                continue
            ds = Dataset(name=f"{name}/{role}", digest=file_digest(path), source_type="local", source=json.dumps({"path": str(path)}),
                         profile=json.dumps({"bytes": path.stat().st_size}))
            inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", role)]))
    return inputs


def provenance_tags(git: Optional[dict], versions: Optional[dict]) -> dict[str, str]:
    tags: dict[str, str] = {}
    if git:
        tags["ptcore.git_commit"] = str(git.get("commit"))
        tags["ptcore.git_dirty"] = str(git.get("dirty"))
        if git.get("commit"):
            tags["mlflow.source.git.commit"] = str(git["commit"])
    for pkg, ver in (versions or {}).items():
        tags[f"ptcore.version.{pkg}"] = str(ver)
    return tags


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # it logs every database error it re-raises with a whole traceback: the error reaches us, and
    # the study's one line (and the traceback file) says it once (orchestrator.common.faults.fatal)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def local_artifacts(uri: str) -> bool:
    """Whether a tracking store keeps no artifacts of its own (a database or a directory):
    the study then puts them in its output directory. An MLflow server has its own."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return scheme in ("", "file") or scheme.startswith(("sqlite", "postgresql", "mysql", "mssql"))


def experiment_owner(uri: str, experiment: str) -> Optional[tuple[str, str]]:
    """(study id, output directory) that an existing experiment is marked with, or None."""
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if exp is None or not exp.tags.get(OWNER):
        return None
    return exp.tags[OWNER], exp.tags.get(OWNER_DIR, "?")


class Tracker:
    """Thin wrapper over :class:`mlflow.MlflowClient` for one study's experiment."""

    def __init__(self, uri: str, experiment: str, artifact_root: Optional[Path] = None, tags: Optional[dict[str, str]] = None,
                 outage_s: float = 300.0):
        """``artifact_root``: where a store without an artifact server of its own (sqlite,
        file, a PostgreSQL database) keeps the experiment's artifacts (MLflow's default
        would be ``./mlruns`` under the working directory). ``tags``: the experiment's, set
        when it is created and brought up to date when it is reused: those that mark it as one
        output directory's (:meth:`orchestrator.ledger.outdir.OutputDir.check_owner`), its kind and
        description (:func:`experiment_tags`). ``outage_s`` (``tracking.outage_s``): every call to the
        store retries for that long while it is unreachable (:class:`orchestrator.common.retry.StoreRetry`)."""
        _quiet_mlflow()
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = StoreRetry("mlflow", redact(uri), outage_s).wrap(MlflowClient(tracking_uri=uri))
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if artifact_root is not None and local_artifacts(uri):
                artifact_root.mkdir(parents=True, exist_ok=True)
                location = artifact_root.resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location, tags=tags)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
            for k, v in (tags or {}).items():
                if exp.tags.get(k) != v:
                    self.client.set_experiment_tag(self.experiment_id, k, v)
        self.experiment = experiment

    # ---------------------------------------------------------------- finding runs

    def runs(self, filter_string: str = "", max_results: int = 5000) -> list:
        from mlflow.entities import ViewType

        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                max_results=min(max_results, 1000), page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token or len(out) >= max_results:
                return out

    def find(self, **tags: str) -> Optional[Any]:
        flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.runs(flt, max_results=10)
        return found[0] if found else None

    def close_stale(self, finished: Iterable[tuple[str, str]] = ()) -> int:
        """End every RUNNING run (left by kill -9): FINISHED if results.csv holds it, else KILLED."""
        done = set(finished)
        n = 0
        for run in self.runs("attributes.status = 'RUNNING'"):
            t = run.data.tags
            key = (t.get(TRIAL, ""), t.get(RUN_INDEX, ""))
            status = "FINISHED" if t.get(KIND) == "run" and key in done else "KILLED"
            self.client.set_terminated(run.info.run_id, status=status)
            n += 1
        return n

    # ---------------------------------------------------------------- creating runs

    def _create(self, name: str, tags: dict[str, str], parent: Optional[str] = None) -> str:
        tags = dict(tags)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def reuse_or_create(self, name: str, key_tags: dict[str, str], tags: dict[str, str], parent: Optional[str] = None) -> str:
        """The study / cell runs are found again on resume (by ``key_tags``) and reopened,
        with the current ``name`` and ``tags``."""
        found = self.find(**key_tags)
        if found is not None:
            run_id = found.info.run_id
            self.client.update_run(run_id, status="RUNNING", name=name)
            self.set_tags(run_id, tags)
            return run_id
        return self._create(name, {**key_tags, **tags}, parent)

    def start_run(self, name: str, parent: str, tags: dict[str, str], params: dict[str, str]) -> str:
        run_id = self._create(name, tags, parent)
        self.log_params(run_id, params)
        return run_id

    # ---------------------------------------------------------------- logging

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_new_params(self, run_id: str, params: dict[str, str]) -> list[str]:
        """Log the params the run lacks; MLflow params are write-once, so a key already logged
        with another value keeps it: those keys are returned."""
        have = self.client.get_run(run_id).data.params
        self.log_params(run_id, {k: v for k, v in params.items() if k[:250] not in have})
        return sorted(k for k, v in params.items() if have.get(k[:250], v) != v)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, tags=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = []
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            items.append(Metric(k, float(v), ts, int(step)))
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_inputs(self, run_id: str, inputs: list) -> None:
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)
