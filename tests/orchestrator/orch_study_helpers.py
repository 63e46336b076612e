"""Helpers for the orchestrator study tests: a tiny random BERT on disk and tiny study files;
the tracking backends a study can write to (SQLite files, PostgreSQL databases) and the
checks of what a study left in them, shared by both; the kill -9 / resume scenario.

(A plain module, imported by the test files, rather than a conftest.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import string
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT + a character-level WordPiece tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    chars = string.ascii_lowercase + string.digits
    words = "the a is was it he she they not no yes and or but of to in that this what cause result because so".split()
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list(chars + string.punctuation) + ["##" + c for c in chars]))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)  # transformers 5: `vocab`, not `vocab_file`
    assert len(tok) == len(vocab)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def tiny_study(model_dir: Path, out_dir: Path, **overrides: Any) -> dict[str, Any]:
    """2 cells (CB, RTE) x ptuning_v2, 2 search trials each, final seeds 0 and 1 in one trial."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "backbones": [{"id": str(model_dir), "label": "tiny"}],
        "tasks": ["superglue/cb", "superglue/rte"],
        "methods": [
            {"name": "ptuning_v2", "fixed": {"prompt_length": 4}, "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}}
        ],
        "train": {"epochs": 2, "batch_size": 4, "max_length": 48},
        "budget": {"trials_per_cell": 2, "max_concurrent": 2},
        "final": {"seeds": [0, 1], "runs_per_trial": 2},
        "data_dir": str(FIXTURE_DATA),
        "ray": {"num_cpus": 2},
        "output_dir": str(out_dir),
    }
    for k, v in overrides.items():
        raw[k] = v
    return raw


def write_study(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)


# ------------------------------------------------------------------ tracking backends: SQLite files or PostgreSQL


@dataclass
class Backend:
    """Where a study keeps its MLflow runs and its Optuna studies: ``tracking`` is the study
    file's ``tracking`` section ({}: the sqlite files in the output directory)."""

    name: str
    tracking: dict[str, str] = field(default_factory=dict)

    def study(self, model_dir: Path, out_dir: Path, **overrides: Any) -> dict[str, Any]:
        """:func:`tiny_study` tracked to this backend."""
        raw = tiny_study(model_dir, out_dir, **overrides)
        if self.tracking:
            raw["tracking"] = {**raw.get("tracking", {}), **self.tracking}
        return raw

    def mlflow_uri(self, out: Path) -> str:
        from orchestrator.common.stores import normalize

        return normalize(self.tracking["mlflow_uri"]) if "mlflow_uri" in self.tracking else f"sqlite:///{out / 'mlflow.db'}"

    def optuna_url(self, out: Path) -> str:
        from orchestrator.common.stores import normalize

        return normalize(self.tracking["optuna_storage"]) if "optuna_storage" in self.tracking else f"sqlite:///{out / 'optuna.db'}"


SQLITE = Backend("sqlite")

# an account that may CREATE DATABASE on the test server (CI: PostgreSQL 15, trust auth)
PG_ENV = "PTCORE_TEST_POSTGRES"
PG_DEFAULTS = ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/postgres"]


class PgServer:
    """The test PostgreSQL server: fresh, uniquely named databases, dropped afterwards."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url

    def _execute(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_url, connect_timeout=5)
        try:
            conn.autocommit = True  # CREATE / DROP DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self, label: str) -> str:
        """A new empty database; its URL (same server and account)."""
        from sqlalchemy.engine import make_url

        name = f"ptcore_test_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._execute(f'CREATE DATABASE "{name}"')
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        # FORCE: this process's MLflow / Optuna connection pools may still hold connections
        self._execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def find_pg_server() -> tuple[Optional[PgServer], str]:
    """The test server, or (None, why the PostgreSQL tests skip). They skip only where no
    server answers (or psycopg2 is missing): a server that answers but refuses us fails them."""
    import socket

    from sqlalchemy.engine import make_url

    candidates = [os.environ[PG_ENV]] if os.environ.get(PG_ENV) else PG_DEFAULTS
    u = make_url(candidates[0])
    host, port = u.host or "127.0.0.1", u.port or 5432
    try:
        import psycopg2
    except ImportError:
        return None, "psycopg2 is not installed: pip install -e '.[postgres]' (or '.[test]')"
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        return None, f"no PostgreSQL server answers at {host}:{port} ({e}); start one (docs/cluster.md, 'PostgreSQL') or set {PG_ENV}"
    errors = []
    for url in candidates:
        try:
            psycopg2.connect(url, connect_timeout=5).close()
            return PgServer(url), ""
        except psycopg2.Error as e:
            errors.append(f"{url}: {str(e).strip().splitlines()[0]}")
    pytest.fail(f"a PostgreSQL server answers at {host}:{port} but lets none of these accounts in: {'; '.join(errors)}; set {PG_ENV}")


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    server, why = find_pg_server()
    if server is None:
        pytest.skip(why)
    return server


@contextlib.contextmanager
def pg_backend_of(server: PgServer):
    """A :class:`Backend` with MLflow and Optuna each in a fresh PostgreSQL database of its
    own (they cannot share one), both dropped afterwards."""
    made = []
    try:
        made.append(server.create("mlflow"))
        made.append(server.create("optuna"))
        yield Backend("postgresql", {"mlflow_uri": made[0], "optuna_storage": made[1]})
    finally:
        for url in made:
            server.drop(url)


@pytest.fixture
def pg_backend(pg_server):
    with pg_backend_of(pg_server) as backend:
        yield backend


@pytest.fixture(scope="module")
def pg_backend_module(pg_server):
    with pg_backend_of(pg_server) as backend:
        yield backend


# ------------------------------------------------------------------ what a finished tiny study left (any backend)

IDS = {"trial_id": str, "source_trial": str}  # ids like 01234567 stay strings


def read_results(out: Path):
    import pandas as pd

    return pd.read_csv(out / "results.csv", dtype=IDS)


def assert_results_complete(df, out: Path) -> None:
    """results.csv of a finished :func:`tiny_study`: 2 cells x (2 search trials + seeds 0, 1),
    each final re-running its cell's best search config, with its data budget and predictions."""
    import json

    from ptcore.metrics import METRICS

    assert len(df) == 8, df[["cell", "phase", "trial_id", "seed", "status"]]  # 2 cells x (2 search trials + 2 final seeds)
    assert not df.duplicated(["trial_id", "run_index"]).any()
    for cell, g in df.groupby("cell"):
        search, final = g[g.phase == "search"], g[g.phase == "final"]
        assert len(search) == 2 and search.trial_id.is_unique
        assert set(search.status) <= {"ok", "pruned"}
        assert sorted(final.seed) == [0, 1] and set(final.status) == {"ok"}
        # finals re-run the configuration successive halving selects (orchestrator.ledger.halving, tested on its
        # own in test_halving.py): tiny_study trains 2 epochs, the default grace 1 and factor 2
        from orchestrator.ledger.halving import select

        picked = select(search.to_dict("records"), epochs=2, grace_period=1, reduction_factor=2)
        best = search.loc[search.trial_id == picked["trial_id"]].iloc[0]
        assert set(final.source_trial) == {best.trial_id}  # finals re-run the selected search config
        assert final.val_primary.notna().all() and (final.layers == 2).all()
        cfg = json.loads(final.iloc[0].config_json)
        assert cfg["lr"] == pytest.approx(json.loads(best.params_json)["lr"])
        assert cfg["method_args"]["prompt_length"] == 4 and cfg["seed"] in (0, 1)
        assert (final.trainable_params < final.total_params).all()
        # the ledger's report inputs: each final run's data budget and per-item val predictions
        for _, row in final.iterrows():
            budget = json.loads(row.data_json)
            assert budget["sizes"]["val"] > 0 and budget["epochs"] == cfg["epochs"] and budget["train_label_counts"]
            stored = json.loads((out / row.predictions).read_text())["val"]
            recomputed = METRICS.get(row.primary_metric)(stored["predictions"], stored["references"], groups=stored["groups"])
            assert recomputed == pytest.approx(row.val_primary)
        assert search.predictions.isna().all()  # search runs report no val
    assert set(df.task) == {"superglue/cb", "superglue/rte"}


def assert_mlflow_complete(uri: str, experiment: str, df) -> None:
    """The study's MLflow store: no run left RUNNING; 1 study run, 2 cell runs under it, and
    exactly one FINISHED run per row of results.csv (its mlflow_run_id) under its cell, with
    params, provenance tags, per-epoch metrics at step = epoch and the finals' checkpoints."""
    from mlflow.tracking import MlflowClient

    runs = mlflow_runs(uri, experiment)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    by_kind: dict[str, list] = {}
    for r in runs:
        by_kind.setdefault(r.data.tags.get("ptcore.kind"), []).append(r)
    (study,) = by_kind["study"]  # reused on resume, never duplicated
    cells = by_kind["cell"]
    assert study.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in cells)
    assert len(cells) == 2 and all(c.data.tags["mlflow.parentRunId"] == study.info.run_id for c in cells)
    cell_ids = {c.info.run_id: c.data.tags["ptcore.cell"] for c in cells}
    finished = [r for r in by_kind["run"] if r.info.status == "FINISHED"]
    keys = [(r.data.tags["ptcore.trial_id"], r.data.tags["ptcore.run_index"]) for r in finished]
    assert len(keys) == len(set(keys)) == len(df)  # one FINISHED run per row: no duplicates
    assert {r.info.run_id for r in finished} == set(df.mlflow_run_id)
    for r in finished:
        t = r.data.tags
        assert cell_ids[t["mlflow.parentRunId"]] == t["ptcore.cell"]
        assert t["ptcore.phase"] in ("search", "final")
        assert "ptcore.git_commit" in t and "ptcore.version.torch" in t and t["ptcore.study_hash"]
        assert r.data.params["prompt_length"] == "4" and "lr" in r.data.params and r.data.params["model"]
        assert "dev_primary" in r.data.metrics
    final = [r for r in finished if r.data.tags["ptcore.phase"] == "final"]
    assert len(final) == 4 and all("val_primary" in r.data.metrics and "trainable_params" in r.data.params for r in final)
    client = MlflowClient(tracking_uri=uri)
    steps = [m.step for m in client.get_metric_history(final[0].info.run_id, "dev_primary") if m.step > 0]
    assert steps[:2] == [1, 2]
    arts = {a.path for a in client.list_artifacts(final[0].info.run_id, "checkpoint")}
    assert {"checkpoint/trainable.safetensors", "checkpoint/run_config.json"} <= arts


def assert_optuna_complete(url: str, study: str, df) -> None:
    """The cells' Optuna studies (``<study>/<cell>``) in the storage at ``url``: no trial left
    RUNNING, and every search row a COMPLETE trial (TPE learned from each)."""
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert names == {f"{study}/{cell}" for cell in set(df.cell)}
    for name in names:
        trials = optuna.load_study(study_name=name, storage=url).trials
        assert optuna.trial.TrialState.RUNNING not in [t.state for t in trials]
        complete = {t.user_attrs.get("tune_trial_id") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        cell = name.split("/", 1)[1]
        assert set(df.trial_id[(df.cell == cell) & (df.phase == "search")]) <= complete


# a run's closing summary (logged once, at step = epochs_run), as against its per-epoch metrics
SUMMARY_KEYS = {"trainable_pct", "wall_s", "train_s"}


def _summary_key(key: str) -> bool:
    return key in SUMMARY_KEYS or key.startswith(("best_", "val_", "test_"))


def stored_metrics(uri: str, experiment: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every metric value the store holds for the experiment, read with SQL from MLflow's own
    tables (duplicates included): run id -> key -> [(step, value)]."""
    from collections import defaultdict

    from mlflow.tracking import MlflowClient
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from orchestrator.common.stores import normalize

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    engine = create_engine(normalize(uri), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT m.run_uuid, m.key, m.step, m.value FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                     "WHERE r.experiment_id = :e"),
                {"e": int(exp.experiment_id)},
            ).all()
    finally:
        engine.dispose()
    out: dict = defaultdict(lambda: defaultdict(list))
    for run, key, step, value in rows:
        out[run][key].append((int(step), float(value)))
    return out


def assert_metrics_logged(uri: str, experiment: str, df, *, exact: bool = True) -> int:
    """Every metric value the runs reported is in the store once, none lost, none doubled,
    though concurrent trials logged them: per row of results.csv, each per-epoch metric has
    one value at every step 1..epochs_run and nowhere else, every epoch the same keys, the
    selected epoch's dev_primary is the row's, and the closing summary (once, at step
    epochs_run) agrees with the row. ``exact``: no other run of the experiment holds per-epoch
    metrics (a study never interrupted). Returns the number of per-epoch values counted."""
    stored = stored_metrics(uri, experiment)
    counted = 0
    for _, row in df.iterrows():
        m = stored.get(row.mlflow_run_id)
        assert m, f"run {row.mlflow_run_id} ({row.cell} {row.trial_id}) has no metrics in the store"
        n = int(row.epochs_run)
        for key, points in m.items():
            steps = [s for s, _ in points]
            assert len(steps) == len(set(steps)), f"{row.trial_id}: {key} logged twice at a step: {sorted(steps)}"
        epoch_keys = {k for k, points in m.items() if not _summary_key(k) and any(s == 1 for s, _ in points)}
        assert {"dev_primary", "train_loss", "lr_schedule"} <= epoch_keys, sorted(m)
        for key in epoch_keys:
            assert sorted(s for s, _ in m[key]) == list(range(1, n + 1)), f"{row.trial_id}: {key} at steps {sorted(m[key])}, epochs_run {n}"
            counted += n
        assert not {k for k in m if not _summary_key(k)} - epoch_keys  # no per-epoch key skipped epoch 1
        dev = dict(m["dev_primary"])
        assert dev[int(row.best_epoch)] == pytest.approx(row.dev_primary)
        if row.status == "ok":  # the closing summary, once
            assert m["best_dev_primary"] == [(n, pytest.approx(row.dev_primary))]
            if row.phase == "final":
                assert m["val_primary"] == [(n, pytest.approx(row.val_primary))]
        else:
            assert not [k for k in m if _summary_key(k)], f"{row.trial_id} ({row.status}) has summary metrics"
    assert sum(len(stored[r]["dev_primary"]) for r in df.mlflow_run_id) == int(df.epochs_run.sum())
    if exact:
        with_epochs = {r for r, m in stored.items() if "dev_primary" in m}
        assert with_epochs == set(df.mlflow_run_id), "a run outside results.csv logged epochs"
    return counted


# ------------------------------------------------------------------ the MLflow layout, read at a glance (any backend)

FILTER_TAGS = ("ptcore.task", "ptcore.method", "ptcore.backbone", "ptcore.regime", "ptcore.phase")
# what describes a run, one value each: MLflow params, never metrics
CONSTANTS = {"trainable_params", "total_params", "checkpoint_bytes", "best_epoch", "epochs_run", "layers"}
TASK_TITLES = {"superglue/cb": "CB", "superglue/rte": "RTE"}


def assert_mlflow_layout(uri: str, experiment: str, description: str) -> None:
    """What the MLflow UI of a :func:`tiny_study` shows (orchestrator.tracking.tracker): the experiment
    described and marked as model training; run names task first (``CB · P-Tuning v2 · tiny``,
    ``… · trial <id>``, ``… · seed <k>``); the filter tags on every run; a cell run's selected
    configuration as params (as its final runs have them) and its summary as metrics; leaf
    runs with their constants as params, ``lr_schedule`` (not ``lr``) per epoch."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"] == description
    runs = mlflow_runs(uri, experiment)
    kids: dict[str, list] = {}
    for r in runs:
        t = r.data.tags
        assert all(t.get(k) for k in FILTER_TAGS), (r.info.run_name, {k: t.get(k) for k in FILTER_TAGS})
        kids.setdefault(t.get("mlflow.parentRunId"), []).append(r)
    (study,) = [r for r in runs if r.data.tags["ptcore.kind"] == "study"]
    assert study.info.run_name == study.data.tags["ptcore.study"] and study.data.tags["ptcore.phase"] == "study"
    assert study.data.tags["ptcore.task"] == "superglue/cb, superglue/rte"
    cells = kids[study.info.run_id]
    assert len(cells) == 2
    for cell in cells:
        t = cell.data.tags
        assert t["ptcore.kind"] == "cell" and t["ptcore.phase"] == "cell" and t["ptcore.regime"] == "full"
        assert cell.info.run_name == f"{TASK_TITLES[t['ptcore.task']]} · P-Tuning v2 · {t['ptcore.backbone']}"
        finals = [r for r in kids[cell.info.run_id] if r.data.tags["ptcore.phase"] == "final"]
        assert finals and cell.data.params["prompt_length"] == "4" and "method.prompt_length" not in cell.data.params
        assert "seed" not in cell.data.params and cell.data.params["lr"] == finals[0].data.params["lr"]
        for r in finals:  # the selection is what each final run trained
            assert {k: v for k, v in r.data.params.items() if k in cell.data.params} == cell.data.params
        m = cell.data.metrics
        assert {"val_mean", "val_std", "best_dev", "trainable_pct"} <= set(m) and m["final_ok"] == len(finals)
        for r in kids[cell.info.run_id]:
            lt = r.data.tags
            assert {k: lt[k] for k in (*FILTER_TAGS[:4], "ptcore.cell")} == {k: t[k] for k in (*FILTER_TAGS[:4], "ptcore.cell")}
            what = f"seed {lt['ptcore.seed']}" if lt["ptcore.phase"] == "final" else f"trial {lt['ptcore.trial_id']}"
            assert r.info.run_name == f"{cell.info.run_name} · {what}"
            assert not CONSTANTS & set(r.data.metrics), sorted(CONSTANTS & set(r.data.metrics))
            assert "lr_schedule" in r.data.metrics and "lr" not in r.data.metrics and "lr" in r.data.params
            if lt["ptcore.status"] == "ok":
                assert CONSTANTS - {"layers"} <= set(r.data.params)


# ------------------------------------------------------------------ kill -9 mid-search, then --resume (any backend)


def _rows(path) -> int:
    import pandas as pd

    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _group_gone(pgid: int, timeout: float = 30.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def kill_resume_scenario(model_dir: Path, tmp_path: Path, backend: Backend) -> dict[str, float]:
    """``kill -9`` in the middle of the search, ``--resume``, Ctrl-C in the middle of that, and
    ``--resume`` again: finished trials are never re-run, the results table ends complete,
    the store has no RUNNING run and no duplicate, Optuna learned from every finished trial.
    Returns the wall time of each leg."""
    import pandas as pd

    out = tmp_path / "out"
    path = write_study(tmp_path / "tiny.yaml", backend.study(model_dir, out))
    uri, storage = backend.mlflow_uri(out), backend.optuna_url(out)
    cmd = [sys.executable, "-m", "orchestrator", "study", str(path)]
    times: dict[str, float] = {}
    t0 = time.time()
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    results = out / "results.csv"
    deadline = time.time() + 400
    try:
        while _rows(results) < 1:  # the first search trial has finished
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
        log.close()
    _group_gone(proc.pid)
    times["until kill -9"] = time.time() - t0
    before = pd.read_csv(results, dtype=IDS)
    assert 1 <= len(before) < 8
    assert any(r.info.status == "RUNNING" for r in mlflow_runs(uri, "tiny"))  # left behind by kill -9

    done = subprocess.run([*cmd], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 2 and "--resume" in done.stderr  # finished work: --resume is required

    # resume, then Ctrl-C (SIGINT to the whole process group, as a terminal does) mid-way:
    # a clean stop: exit 130, every open MLflow run ends KILLED
    t0 = time.time()
    log = open(tmp_path / "second.log", "w")
    proc = subprocess.Popen([*cmd, "--resume"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while _rows(results) < len(before) + 1:
            assert proc.poll() is None, (tmp_path / "second.log").read_text()[-3000:]
            assert time.time() < deadline + 400, "no trial finished in time"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    second = (tmp_path / "second.log").read_text()
    assert "closed" in second and "left RUNNING" in second  # the kill -9 leftovers were closed first
    assert "interrupted" in second
    _group_gone(proc.pid)
    times["resume until Ctrl-C"] = time.time() - t0
    assert not [r for r in mlflow_runs(uri, "tiny") if r.info.status == "RUNNING"]
    middle = pd.read_csv(results, dtype=IDS)

    t0 = time.time()
    done = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    times["resume to the end"] = time.time() - t0

    after = pd.read_csv(results, dtype=IDS)
    assert_results_complete(after, out)
    # what had finished before each stop is still there, unchanged, and was not run again
    for earlier in (before, middle):
        kept = after.merge(earlier[["trial_id", "run_index", "dev_primary", "mlflow_run_id"]], on=["trial_id", "run_index"], suffixes=("", "_e"))
        assert len(kept) == len(earlier)
        assert (kept.mlflow_run_id == kept.mlflow_run_id_e).all() and (kept.dev_primary == kept.dev_primary_e).all()

    assert_mlflow_complete(uri, "tiny", after)
    runs = mlflow_runs(uri, "tiny")
    killed = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get("ptcore.kind") == "run"]
    assert not {r.data.tags["ptcore.trial_id"] for r in killed} & set(after.trial_id[after.phase == "search"])
    # every search row is a COMPLETE Optuna trial, including one whose row was written just
    # before the kill, before Tune could tell Optuna
    assert_optuna_complete(storage, "tiny", after)
    assert_metrics_logged(uri, "tiny", after, exact=False)  # killed runs logged epochs too
    return times


# ------------------------------------------------------------------ kill -9 at named points of the study (any backend)

KILL_POINTS = ("record.search.after_row", "record.final.before_row", "report.mid")


def kill_points_scenario(model_dir: Path, tmp_path: Path, backend: Backend) -> dict[str, float]:
    """``kill -9`` of ``orchestrate study`` at three points, each followed by ``--resume``
    (:mod:`orchestrator.common.failpoints`; the driver sends itself SIGKILL there):

    1. during the search, just after a trial's results row was written and before its MLflow
       run ended (and before Tune told Optuna);
    2. during the final seeds, after a run's metrics, tags and checkpoint went to MLflow and
       before its results row was written;
    3. while the report is written: one file of it new, the rest not yet.

    The driver's process group (the local Ray it started) empties by itself after each kill.
    The last ``--resume`` completes the study: no finished run trained again, each run once in
    results.csv and once FINISHED in MLflow, nothing left RUNNING, Optuna learned from every
    search row, and the report whole. Returns the wall time of each leg."""
    import pandas as pd

    out = tmp_path / "out"
    path = write_study(tmp_path / "tiny.yaml", backend.study(model_dir, out))
    uri, storage = backend.mlflow_uri(out), backend.optuna_url(out)
    cmd = [sys.executable, "-m", "orchestrator", "study", str(path)]
    results, report = out / "results.csv", out / "report"
    times: dict[str, float] = {}
    legs: list = []
    killed: list[tuple[str, int]] = []  # (point, process group of the killed study)
    for i, point in enumerate((*KILL_POINTS, None)):
        env = {**os.environ, "PTCORE_FAILPOINTS_DIR": str(tmp_path / "fired")}
        if point:
            env["PTCORE_FAILPOINTS"] = point
        t0 = time.time()
        proc = subprocess.Popen([*cmd, *(["--resume"] if i else [])], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            log = proc.communicate(timeout=900)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        times[f"until {point}" if point else "resume to the end"] = time.time() - t0
        if point is None:
            assert proc.returncode == 0, log[-4000:]
            break
        assert proc.returncode == -signal.SIGKILL, f"{point}: exit {proc.returncode}\n{log[-4000:]}"
        assert (tmp_path / "fired" / f"{point}.fired").is_file()
        killed.append((point, proc.pid))
        rows = pd.read_csv(results, dtype=IDS)
        legs.append(rows)
        running = [r for r in mlflow_runs(uri, "tiny") if r.info.status == "RUNNING" and r.data.tags.get("ptcore.kind") == "run"]
        if point == "record.search.after_row":  # the row is there, its MLflow run still RUNNING
            assert 1 <= len(rows) < 4 and set(rows.phase) == {"search"}
            assert set(rows.mlflow_run_id) & {r.info.run_id for r in running}
        elif point == "record.final.before_row":  # MLflow has the final run's checkpoint, results.csv no row
            assert len(rows[rows.phase == "search"]) == 4 and len(rows) < 8
            final_open = [r for r in running if r.data.tags["ptcore.phase"] == "final"]
            assert [r for r in final_open if "val_primary" in r.data.metrics and r.info.run_id not in set(rows.mlflow_run_id)]
        else:  # the study is complete; of the report, one file is written
            assert len(rows) == 8 and not running
            assert len([p for p in report.iterdir() if not p.name.startswith(".")]) == 1

    # the local Ray of a killed study goes with it: raylet and GCS at once (they share the
    # driver's fate), Ray's dashboard and runtime-env agents once they miss the raylet (~60 s here)
    for point, pgid in killed:
        assert _group_gone(pgid, 120), f"{point}: processes of the killed study still run"
    after = pd.read_csv(results, dtype=IDS)
    assert_results_complete(after, out)
    for earlier in legs:  # what had finished before each kill is still there, unchanged, not run again
        kept = after.merge(earlier[["trial_id", "run_index", "dev_primary", "mlflow_run_id"]], on=["trial_id", "run_index"], suffixes=("", "_e"))
        assert len(kept) == len(earlier)
        assert (kept.mlflow_run_id == kept.mlflow_run_id_e).all() and (kept.dev_primary == kept.dev_primary_e).all()
    assert_mlflow_complete(uri, "tiny", after)
    assert_optuna_complete(storage, "tiny", after)
    assert_metrics_logged(uri, "tiny", after, exact=False)
    from orchestrator.report import OUTPUTS

    written = {p.name for p in report.iterdir() if not p.name.startswith(".")}
    assert {"results.md", "results.tex"} <= written <= set(OUTPUTS), written
    text = (report / "results.md").read_text()
    assert "superglue/cb" in text or "CB" in text
    return times
