"""``orchestrate ui [STUDY]``: serve the MLflow UI of a study's tracking store (bound to
127.0.0.1 unless --host) and print a link to each experiment's runs; Ctrl-C stops it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Optional

from ptcore.errors import PtcoreError

from orchestrator.cli.subcommand import Subcommand
from orchestrator.common.stores import is_postgres, postgres_problem, redact, split_password
from orchestrator.execution.processes import check_port, run_process_tree
from orchestrator.study import load_study
from orchestrator.study.schema import OUTPUT_ROOT


def add_ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=None, help="study file or its output dir (default: the only study under studies_out/)")
    p.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000); a busy one is refused before anything starts")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")


def tracking_uri_for(target: Optional[str]) -> str:
    """The MLflow URI of a study given its file or output dir."""
    if target is None:
        root = Path(OUTPUT_ROOT)
        found = sorted({p.parent for pattern in ("*/mlflow.db", "*/study.yaml") for p in root.glob(pattern)}) if root.is_dir() else []
        if len(found) != 1:
            raise PtcoreError(
                "name the study: orchestrate ui STUDY_FILE_OR_DIR"
                + (f" (found {', '.join(map(str, found))})" if found else " (no study output directory in studies_out/ here)")
            )
        target = str(found[0])
    p = Path(target)
    if p.is_dir():
        db = p / "mlflow.db"
        if db.is_file():
            return f"sqlite:///{db.resolve()}"
        if (p / "study.yaml").is_file():
            return load_study(p / "study.yaml", output_dir=str(p)).mlflow_uri
        raise PtcoreError(f"{p}: no mlflow.db here; pass the study file or its output dir")
    if p.is_file():
        return load_study(p).mlflow_uri
    raise PtcoreError(f"{target}: no such study file or directory")


def ui_command(uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


# MLflow 3.17's UI opens in its GenAI view (traces, an assistant) unless the page asks for the
# model-training one: the query parameter workflowType=machine_learning (then remembered in the
# browser's localStorage, "mlflow.workflowType"); mlflow/server/js/build/static/js/main.*.js.
# The experiment tag mlflow.experimentKind alone does not switch it (seen in headless Chromium).
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def experiment_links(uri: str, base: str, env: Optional[dict] = None) -> list[tuple[str, str]]:
    """(experiment name, its runs table in the model-training view) for each study experiment
    in the store; none where the store cannot be read (the UI still serves it)."""
    try:
        from mlflow.tracking import MlflowClient  # deferred for startup time: mlflow (about a second) only when serving

        if env and "PGPASSWORD" in env:
            os.environ.setdefault("PGPASSWORD", env["PGPASSWORD"])
        experiments = MlflowClient(tracking_uri=uri).search_experiments()
    except Exception:  # noqa: BLE001  (a link is a convenience; the server is what matters)
        return []
    return [(e.name, f"{base}/#/experiments/{e.experiment_id}?{MODEL_TRAINING_VIEW}")
            for e in experiments if e.name != "Default"]


def handle_ui(args: argparse.Namespace) -> int:
    uri = tracking_uri_for(args.target)
    env = None
    if is_postgres(uri):  # a database: served from here like a sqlite file, once it answers
        why = postgres_problem(uri)
        if why:
            raise PtcoreError(f"{args.target or 'studies_out'}: tracking.mlflow_uri: {why}")
        uri, password = split_password(uri)
        env = {**os.environ, "PGPASSWORD": password} if password is not None else None
    elif not uri.startswith("sqlite:") and not uri.startswith("file:"):
        print(f"this study tracks to {redact(uri)}: open it there (nothing to serve locally)")
        return 0
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///") :]):
        raise PtcoreError(f"{uri[len('sqlite:///'):]} does not exist yet: run the study first")
    check_port(args.host, args.port, "the MLflow UI")  # before anything starts: one line, exit 2
    cmd = ui_command(uri, args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base}  ({redact(uri)}); Ctrl-C to stop", flush=True)
    for name, link in experiment_links(uri, base, env):
        print(f"  {name}: {link}", flush=True)
    # its own process group; Ctrl-C / SIGTERM stop MLflow's whole process tree (~15 processes)
    rc, stopped = run_process_tree(cmd, env=env)
    if stopped is not None:
        print(f"MLflow UI stopped ({signal.Signals(stopped).name})", file=sys.stderr)
        return 0
    if rc != 0:
        print(f"error: the MLflow UI exited with status {rc} (its messages are above)", file=sys.stderr)
        return rc if rc > 0 else 128 - rc  # killed by a signal: 128 + its number, as a shell reports it
    return 0


SUBCOMMAND = Subcommand("serve the MLflow UI of a study (bound to 127.0.0.1 unless --host)", add_ui_args, handle_ui)
