"""MLflow tracking of a study, from the driver only.

Layout (one experiment per study, created by name with :class:`MlflowClient`; the driver
never calls ``mlflow.set_experiment`` or touches the fluent API's global state)::

    study run                      tags ptcore.kind=study
    └── cell run (one per cell)    tags ptcore.kind=cell, ptcore.cell, mlflow.parentRunId
        ├── trial run (search)     ptcore.kind=run, ptcore.phase=search, ptcore.trial_id
        └── final run (per seed)   ptcore.kind=run, ptcore.phase=final, ptcore.seed (+ checkpoint artifact)

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
from typing import Any, Iterable, Optional

KIND, CELL, PHASE, TRIAL, RUN_INDEX, SEED = (
    "ptcore.kind",
    "ptcore.cell",
    "ptcore.phase",
    "ptcore.trial_id",
    "ptcore.run_index",
    "ptcore.seed",
)
# on the MLflow experiment (a tag) and each cell's Optuna study (a user attribute): the output
# directory whose study they are (its id, orchestrator.ledger.OutputDir.uid) and its path
OWNER, OWNER_DIR = "ptcore.study_uid", "ptcore.output_dir"


def flatten_config(resolved: dict[str, Any]) -> dict[str, str]:
    """The resolved RunConfig as MLflow params: run settings as is, method options as ``method.<k>``."""
    out: dict[str, str] = {}
    for k, v in sorted(resolved.items()):
        if k == "method_args":
            for mk, mv in sorted((v or {}).items()):
                out[f"method.{mk}"] = _param_str(mv)
        else:
            out[k] = _param_str(v)
    return out


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]


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
    for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


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

    def __init__(self, uri: str, experiment: str, artifact_root: Optional[Path] = None, owner: Optional[dict[str, str]] = None):
        """``artifact_root``: where a store without an artifact server of its own (sqlite,
        file, a PostgreSQL database) keeps the experiment's artifacts (MLflow's default
        would be ``./mlruns`` under the working directory). ``owner``: tags that mark the
        experiment as one output directory's (:meth:`orchestrator.ledger.OutputDir.check_owner`)."""
        _quiet_mlflow()
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if artifact_root is not None and local_artifacts(uri):
                artifact_root.mkdir(parents=True, exist_ok=True)
                location = artifact_root.resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location, tags=owner)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
            for k, v in (owner or {}).items():
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
        """The study / cell runs are found again on resume (by their tags) and reopened."""
        found = self.find(**key_tags)
        if found is not None:
            run_id = found.info.run_id
            self.client.update_run(run_id, status="RUNNING")
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

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)
