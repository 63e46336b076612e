"""The fault primitives: what a fault is (``orchestrator.common.faults``) and how a store
outage is waited out (``orchestrator.common.retry``).

Classification runs on real errors where they are cheap to get (a refused psycopg2 and
SQLAlchemy connect, a real SQLite error), the retry on a fake clock (its sleeps are
counted, not slept), and one test on a private PostgreSQL server (``pg_private``) that goes
down and comes back while Optuna and SQLAlchemy keep writing to it.
"""

from __future__ import annotations

import errno
import pickle
import re
import threading
import time

import pytest

from orchestrator.common import faults
from orchestrator.common.faults import (
    EXIT_BUG,
    EXIT_RESUMABLE,
    DiskFull,
    Fault,
    OutOfMemory,
    StoreUnavailable,
    TrialFailed,
    classify,
    is_store_outage,
    write_traceback,
)
from orchestrator.common.retry import StoreRetry, retrying_optuna_storage

CLOSED = "postgresql://postgres@127.0.0.1:{port}/nothing"


def closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: a connect is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def refused():
    """Real errors of a PostgreSQL server that is not there: (psycopg2's, SQLAlchemy's)."""
    psycopg2 = pytest.importorskip("psycopg2")
    import sqlalchemy

    port = closed_port()
    with pytest.raises(psycopg2.OperationalError) as pg:
        psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="nothing", connect_timeout=3)
    engine = sqlalchemy.create_engine(CLOSED.format(port=port).replace("postgresql", "postgresql+psycopg2"))
    with pytest.raises(sqlalchemy.exc.OperationalError) as sa:
        engine.connect()
    engine.dispose()
    return pg.value, sa.value


def raised(make, cause=None, context=None):
    """``make()`` raised (from ``cause``, or while handling ``context``): a real chain."""
    try:
        if context is not None:
            try:
                raise context
            except BaseException:
                raise make()
        if cause is not None:
            raise make() from cause
        raise make()
    except BaseException as e:
        return e


# ------------------------------------------------------------------ classify


def test_disk_full_is_classified_with_its_path():
    for code in (errno.ENOSPC, errno.EDQUOT):
        f = classify(OSError(code, "No space left on device", "/out/results.csv"))
        assert isinstance(f, DiskFull) and f.path == "/out/results.csv" and f.exit_code == EXIT_RESUMABLE
    assert classify(OSError(errno.ENOSPC, "No space left on device")).path == "?"
    wrapped = raised(lambda: RuntimeError("checkpoint failed"), cause=OSError(errno.ENOSPC, "No space", "/ckpt"))
    assert isinstance(classify(wrapped), DiskFull) and classify(wrapped).path == "/ckpt"
    # torch.save / Ray: the OSError only as text
    assert isinstance(classify(RuntimeError("[Errno 28] No space left on device: '/tmp/ray/x'")), DiskFull)
    assert classify(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert not is_store_outage(OSError(errno.ENOSPC, "No space left on device"))


def test_psycopg2_and_sqlalchemy_refusals_are_store_outages(refused):
    pg, sa = refused
    for exc in (pg, sa):
        f = classify(exc)
        assert isinstance(f, StoreUnavailable) and f.exit_code == EXIT_RESUMABLE, repr(exc)
        assert is_store_outage(exc)
        assert "Connection refused" in f.reason and "\n" not in f.reason
    assert sa.__cause__ is sa.orig  # what the chain walk relies on


def test_optuna_storage_error_is_an_outage_only_with_a_connection_error_in_its_chain(refused):
    from optuna.exceptions import StorageInternalError

    _, sa = refused
    exc = raised(lambda: StorageInternalError("An exception is raised during the commit."), cause=sa)
    assert isinstance(classify(exc), StoreUnavailable) and is_store_outage(exc)
    assert classify(StorageInternalError("invalid data, e.g. exceeding max length")) is None


def test_a_database_error_that_is_not_about_the_connection_is_a_bug(tmp_path):
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as no_table, engine.connect() as c:
        c.execute(sqlalchemy.text("SELECT * FROM missing"))
    engine.dispose()
    assert classify(no_table.value) is None and not is_store_outage(no_table.value)  # no 5-minute wait for a bug

    import sqlite3

    assert is_store_outage(sqlite3.OperationalError("database is locked"))
    full = sqlite3.OperationalError("database or disk is full")
    assert isinstance(classify(full), DiskFull) and not is_store_outage(full)

    psycopg2 = pytest.importorskip("psycopg2")
    from psycopg2 import errors as pe

    assert not is_store_outage(pe.QueryCanceled("canceling statement due to statement timeout"))
    assert not is_store_outage(pe.UndefinedTable("relation does not exist"))
    assert is_store_outage(pe.AdminShutdown("terminating connection due to administrator command"))
    assert isinstance(classify(pe.DiskFull("could not extend file: No space left on device")), DiskFull)
    assert is_store_outage(psycopg2.InterfaceError("connection already closed"))


def test_other_connection_errors_are_outages():
    import requests

    assert is_store_outage(requests.exceptions.ConnectionError("Max retries exceeded"))
    assert is_store_outage(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    assert not is_store_outage(BrokenPipeError())  # a pipe to a child, not a store


def test_mlflow_exception_of_a_connection_failure_is_an_outage(refused):
    from mlflow.exceptions import MlflowException

    _, sa = refused
    exc = raised(lambda: MlflowException(message=sa, error_code="TEMPORARILY_UNAVAILABLE"), cause=sa)  # as its SQL store does
    assert is_store_outage(exc)
    rest = MlflowException("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed with exception "
                           "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded (Connection refused)")
    assert is_store_outage(rest)  # the chain lost on the way (Ray): the message tells
    assert classify(MlflowException("Invalid value for parameter 'lr'", error_code="INVALID_PARAMETER_VALUE")) is None


def test_memory_errors():
    f = classify(MemoryError())
    assert isinstance(f, OutOfMemory) and f.exit_code == EXIT_RESUMABLE
    assert isinstance(classify(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")), OutOfMemory)
    OOM = type("OutOfMemoryError", (RuntimeError,), {"__module__": "torch.cuda"})
    assert isinstance(classify(OOM("Tried to allocate")), OutOfMemory)


def test_a_bug_is_none():
    assert classify(ValueError("bad")) is None and not is_store_outage(ValueError("bad"))
    assert classify(KeyError("x")) is None


def test_chains_and_ray_wrappers_are_walked(refused):
    pg, _ = refused
    # a KeyError raised while handling an outage: the outage is why
    assert isinstance(classify(raised(lambda: KeyError("k"), context=pg)), StoreUnavailable)
    # `raise ... from None` says the context does not matter, as a traceback would not print it
    hidden = raised(lambda: KeyError("k"), context=pg)
    hidden.__suppress_context__ = True
    assert classify(hidden) is None

    class RayTaskError(Exception):  # duck-typed: ray.exceptions.RayTaskError / ray.tune.error.TuneError
        def __init__(self, msg, cause):
            super().__init__(msg)
            self.cause = cause

    oom = RayTaskError("ray::train() failed", raised(lambda: RuntimeError("step"), cause=MemoryError()))
    tune = RayTaskError("Trials did not complete", oom)
    assert isinstance(classify(tune), OutOfMemory)
    # a Fault already raised (by the retry) comes back as it is, with what it knows
    su = StoreUnavailable("optuna", "postgresql://h/db", 301.0, "Connection refused")
    carried = RayTaskError("ray::trial failed", raised(lambda: su, cause=pg))
    assert classify(carried) is su and not is_store_outage(carried)  # not retried twice
    # several: the full disk wins (it makes the store fail)
    both = raised(lambda: RuntimeError("x"), cause=raised(lambda: pg, context=OSError(errno.ENOSPC, "No space", "/out")))
    assert isinstance(classify(both), DiskFull)
    # a cycle in the chain does not hang
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a) is None


def test_each_fault_says_one_line_and_the_next_step():
    faults_ = [
        StoreUnavailable("optuna", "postgresql://u:***@db:5432/optuna", 300.4, "connection to server failed:\n\tIs it running?"),
        StoreUnavailable("", "", 0.0),
        DiskFull("/out"),
        OutOfMemory("killed by the out-of-memory killer"),
        TrialFailed("cell1/trial_3/run0", "ValueError: bad shape\n  more"),
    ]
    for f in faults_:
        line = f.line()
        assert "\n" not in line and line == str(f), line
        assert "--resume" in line, line
        assert isinstance(f, Fault) and isinstance(f, Exception)
        copy = pickle.loads(pickle.dumps(f))  # Ray carries them between processes
        assert type(copy) is type(f) and copy.line() == line
    su, su0, disk, oom, trial = faults_
    assert su.line() == ("the tracking store optuna at postgresql://u:***@db:5432/optuna has been unreachable for 300 s "
                         "(tracking.outage_s; last error: connection to server failed:); the study stopped cleanly: when it is back, "
                         "run again with --resume")
    assert su0.line() == "the tracking store is unreachable; the study stopped cleanly: when it is back, run again with --resume"
    assert disk.line() == "disk full at /out: free space there (or move output_dir / RAY_TMPDIR), then run again with --resume"
    assert "lower batch_size or max_length" in oom.line() and "resources" in oom.line()
    assert "fix the cause" in trial.line() and "cell1/trial_3/run0" in trial.line()
    assert [f.exit_code for f in faults_] == [EXIT_RESUMABLE] * 4 + [EXIT_BUG]
    assert (faults.EXIT_BUG, faults.EXIT_BAD_INPUT, faults.EXIT_RESUMABLE) == (1, 2, 3)
    assert "password" not in StoreUnavailable("x", "", 1, "postgresql://u:password@h/db refused").line()


# ------------------------------------------------------------------ write_traceback


def test_write_traceback_writes_the_whole_chain(tmp_path, refused):
    pg, _ = refused
    exc = raised(lambda: RuntimeError("the study stopped"), cause=raised(lambda: ValueError("inner cause"), context=pg))
    path = write_traceback(tmp_path / "logs", exc, "study/driver")
    assert path is not None and path.parent == tmp_path / "logs"
    assert re.fullmatch(r"study_driver-\d{8}T\d{6}\.\d{6}Z\.log", path.name), path.name
    text = path.read_text()
    for part in ("RuntimeError: the study stopped", "ValueError: inner cause", "Connection refused",
                 "direct cause", "During handling", "fault: the tracking store is unreachable (last error: connection to"):
        assert part in text, part
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert write_traceback(tmp_path / "logs", exc, "study/driver") != path  # a second one does not overwrite it


def test_write_traceback_never_raises(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert write_traceback(blocker / "logs", ValueError("x"), "w") is None  # cannot make the directory (as root too)

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faults.os, "replace", full)
    assert write_traceback(tmp_path / "logs", ValueError("x"), "w") is None
    assert list((tmp_path / "logs").iterdir()) == []  # the temporary is removed


# ------------------------------------------------------------------ StoreRetry, on a fake clock


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s > 0
        self.sleeps.append(s)
        self.now += s


def store_down_until(t: FakeTime, up_at: float, calls: list):
    import psycopg2

    def fn(x, y=0):
        calls.append(t.now)
        if t.now < up_at:
            raise psycopg2.OperationalError('connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused\n'
                                            "\tIs the server running on that host?")
        return x + y

    return fn


def retry_on(t: FakeTime, outage_s: float, lines: list) -> StoreRetry:
    return StoreRetry("optuna", "postgresql://u:***@db:5432/optuna", outage_s, say=lines.append, sleep=t.sleep, clock=t.clock)


def test_a_short_outage_is_waited_out_with_one_line_each_way():
    t, lines, calls = FakeTime(), [], []
    r = retry_on(t, 300, lines)
    assert r.call(store_down_until(t, 10, calls), 1, y=2) == 3
    assert t.sleeps == [0.5, 1, 2, 4, 8] and len(calls) == 6
    assert lines == [
        "tracking store optuna (postgresql://u:***@db:5432/optuna) unreachable: connection to server at \"db\" (10.0.0.5), "
        "port 5432 failed: Connection refused; retrying for up to 300 s",
        "tracking store optuna is back after 16 s",
    ]
    assert not r.down
    assert r.call(lambda: "again") == "again" and len(lines) == 2  # nothing more said once it is back


def test_a_long_outage_raises_store_unavailable_at_the_bound():
    t, lines, calls = FakeTime(), [], []
    r = retry_on(t, 100, lines)
    with pytest.raises(StoreUnavailable) as info:
        r.call(store_down_until(t, float("inf"), calls), 1)
    assert t.sleeps == [0.5, 1, 2, 4, 8, 16, 30, 30, 8.5]  # doubling, capped at 30 s, never past the bound
    assert sum(t.sleeps) == 100 and t.now == 100 and calls[-1] == 100  # a last try at the bound
    su = info.value
    assert su.down_s == 100 and su.store == "optuna" and "Connection refused" in su.reason
    assert type(su.__cause__).__name__ == "OperationalError"  # chained from the last error
    assert "unreachable for 100 s" in su.line() and "--resume" in su.line()
    assert len(lines) == 1 and "unreachable" in lines[0]  # no "back"
    assert classify(su) is su and not is_store_outage(su)
    # once nobody waits, a later failure is a new outage: announced again, with a bound of its own
    assert r.call(store_down_until(t, 105, calls), 1) == 1
    assert t.sleeps[9:] == [0.5, 1, 2, 4] and len(lines) == 3 and lines[2] == "tracking store optuna is back after 7.5 s"


def test_other_errors_propagate_at_once():
    t, lines = FakeTime(), []
    r = retry_on(t, 300, lines)
    calls = []

    def bug():
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        r.call(bug)
    assert calls == [1] and t.sleeps == [] and lines == []
    # an error of another kind during an outage: it propagates, and the store did answer
    errors = iter([ConnectionRefusedError("Connection refused"), KeyError("no such run")])

    def flaky():
        raise next(errors)

    with pytest.raises(KeyError):
        r.call(flaky)
    assert t.sleeps == [0.5] and len(lines) == 2 and lines[1].startswith("tracking store optuna is back")


def test_the_success_path_reads_no_clock_and_sleeps_not():
    def never(*a):
        raise AssertionError("the clock or sleep was used on the success path")

    r = StoreRetry("mlflow", "sqlite:///x", 300, say=never, sleep=never, clock=never)
    assert [r.call(lambda i: i * 2, i) for i in range(1000)] == [i * 2 for i in range(1000)]


def test_zero_outage_s_raises_on_the_first_failure():
    t, lines = FakeTime(), []
    r = retry_on(t, 0, lines)
    with pytest.raises(StoreUnavailable):
        r.call(store_down_until(t, 5, []), 1)
    assert t.sleeps == [] and lines == []


def test_threads_share_one_outage():
    """Eight threads call through one StoreRetry while the store is down for 0.3 s: every
    call succeeds, and each outage announced is announced once and ended once."""
    up_at = time.monotonic() + 0.3
    lines: list[str] = []
    r = StoreRetry("mlflow", "postgresql://db/mlflow", 30, say=lines.append, first_delay_s=0.02)

    def fn(i):
        if time.monotonic() < up_at:
            raise ConnectionRefusedError("Connection refused")
        return i

    out = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, r.call(fn, i))) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert out == {i: i for i in range(8)}
    down = [ln for ln in lines if "unreachable" in ln]
    back = [ln for ln in lines if "is back" in ln]
    assert 1 <= len(down) == len(back) and lines[-1] == back[-1], lines
    assert not r.down


def test_the_proxy_retries_public_methods_only():
    t, lines = FakeTime(), []
    r = retry_on(t, 300, lines)

    class Client:
        limit = 7

        def __init__(self):
            self.fails = 2

        def get(self, key):
            if self.fails:
                self.fails -= 1
                raise ConnectionRefusedError("Connection refused")
            return f"value of {key}"

        def put(self, key):
            raise ConnectionRefusedError("Connection refused")

        def _private(self):
            raise ConnectionRefusedError("Connection refused")

    client = Client()
    proxy = r.wrap(client)
    assert proxy.get("k") == "value of k" and t.sleeps == [0.5, 1] and proxy.limit == 7
    with pytest.raises(ConnectionRefusedError):
        proxy._private()  # not retried: private
    proxy.limit = 8
    assert client.limit == 8  # writes go through
    only = r.wrap(Client(), methods={"get"})
    with pytest.raises(ConnectionRefusedError):
        only.put("k")  # not named: not retried
    assert only.get("k") == "value of k"
    with pytest.raises(AttributeError, match="nope"):
        r.wrap(Client(), methods={"get", "nope"})


# ------------------------------------------------------------------ the Optuna storage


def test_retrying_optuna_storage_is_a_storage_optuna_takes(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.storages._heartbeat import BaseHeartbeat

    t, lines = FakeTime(), []
    r = retry_on(t, 300, lines)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = retrying_optuna_storage(optuna.storages.RDBStorage(url), r)
    assert isinstance(storage, optuna.storages.BaseStorage) and isinstance(storage, BaseHeartbeat)
    assert optuna.storages.get_storage(storage) is storage
    assert isinstance(storage._retry_inner, optuna.storages._CachedStorage)  # Optuna's cache kept, as create_study would
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda tr: tr.suggest_float("x", 0, 1), n_trials=3)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    copy = pickle.loads(pickle.dumps(storage))  # a study sent to a Ray actor takes its storage along
    assert type(copy) is type(storage) and copy.get_n_trials(study._study_id) == 3
    assert retrying_optuna_storage(storage, r)._retry_inner is storage._retry_inner  # not retried twice
    assert retrying_optuna_storage(url, r).get_all_studies()[0].study_name == "s"  # a URL
    plain = retrying_optuna_storage(optuna.storages.InMemoryStorage(), r)
    assert not isinstance(plain, BaseHeartbeat)


def test_a_retried_write_whose_reply_was_lost_is_not_an_error():
    """The server went down after committing a tell (or a new study) and before answering: the
    retry finds the work done and says so, instead of UpdateFinishedTrialError."""
    import optuna
    import psycopg2

    class LosesReplies(optuna.storages.InMemoryStorage):
        lose = {"set_trial_state_values", "create_new_study"}

        def set_trial_state_values(self, *a, **k):
            done = super().set_trial_state_values(*a, **k)
            if "set_trial_state_values" in self.lose:
                self.lose.discard("set_trial_state_values")
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            return done

        def create_new_study(self, *a, **k):
            done = super().create_new_study(*a, **k)
            if "create_new_study" in self.lose:
                self.lose.discard("create_new_study")
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            return done

    t, lines = FakeTime(), []
    storage = retrying_optuna_storage(LosesReplies(), retry_on(t, 300, lines))
    study = optuna.create_study(storage=storage, study_name="lost")
    trial = study.ask()
    study.tell(trial, 0.25)
    assert [tr.state for tr in study.trials] == [optuna.trial.TrialState.COMPLETE] and study.best_value == 0.25
    assert len(t.sleeps) == 2 and len(lines) == 4
    trial = study.ask()
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # a real second tell is still refused
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE, [0.75])


# ------------------------------------------------------------------ a real outage


def test_optuna_and_sqlalchemy_survive_a_real_postgresql_restart():
    """A private PostgreSQL server goes down for 3 s while Optuna asks and tells trials and
    SQLAlchemy inserts rows, both through one StoreRetry: nothing fails, nothing is lost.
    Then with outage_s=2, a 6 s outage ends the wait with StoreUnavailable after 2 s."""
    from pg_private import PrivatePostgres, available

    ok, why = available()
    if not ok:
        pytest.skip(why)
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with PrivatePostgres() as pg:
        opt_url = pg.url("optuna").replace("postgresql://", "postgresql+psycopg2://")
        rows_url = pg.url("rows").replace("postgresql://", "postgresql+psycopg2://")
        lines: list[str] = []
        r = StoreRetry("optuna", opt_url, 30, say=lines.append)
        storage = retrying_optuna_storage(optuna.storages.RDBStorage(opt_url, engine_kwargs={"pool_pre_ping": True}), r)
        study = optuna.create_study(storage=storage, study_name="outage")
        engine = sqlalchemy.create_engine(rows_url)  # no pre-ping: stale pooled connections fail, then the pool renews them
        with engine.begin() as c:
            c.execute(sqlalchemy.text("CREATE TABLE rows (i integer primary key)"))

        def insert(i):
            with engine.begin() as c:
                c.execute(sqlalchemy.text("INSERT INTO rows VALUES (:i)"), {"i": i})

        told = []
        inserted = []
        errors = []

        def rows_loop(stop):
            i = 0
            while not stop.is_set():
                try:
                    r.call(insert, i)
                except BaseException as e:  # noqa: BLE001 (reported below)
                    errors.append(e)
                    return
                inserted.append(i)
                i += 1
                time.sleep(0.02)

        stop = threading.Event()
        rows = threading.Thread(target=rows_loop, args=(stop,))
        rows.start()
        t0 = time.monotonic()
        restarted = None
        while time.monotonic() - t0 < 6:
            if restarted is None and time.monotonic() - t0 > 1:
                restarted = pg.outage(3)
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0, 1))
            told.append(trial.number)
        stop.set()
        rows.join(30)
        restarted.join(30)
        assert not errors, errors
        assert [tr.state for tr in study.trials].count(optuna.trial.TrialState.COMPLETE) == len(told)
        assert len(study.trials) == len(told)
        with engine.connect() as c:
            assert [x for (x,) in c.execute(sqlalchemy.text("SELECT i FROM rows ORDER BY i"))] == inserted
        down = [ln for ln in lines if "unreachable" in ln]
        back = [ln for ln in lines if "is back" in ln]
        assert 1 <= len(down) == len(back) and lines[-1] == back[-1], lines
        assert re.search(r"is back after \d", back[-1])
        gap = [b - a for a, b in zip(told, told[1:])]
        assert gap == [1] * len(gap) and told[0] == 0  # no trial lost or doubled

        # an outage longer than the bound: StoreUnavailable after outage_s
        short = StoreRetry("optuna", "postgresql://postgres@127.0.0.1/optuna", 2, say=lines.append)
        study2 = optuna.load_study(study_name="outage", storage=retrying_optuna_storage(
            optuna.storages.RDBStorage(opt_url, engine_kwargs={"pool_pre_ping": True}), short))
        pg.outage(6)
        t1 = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            study2.ask()
        waited = time.monotonic() - t1
        assert 2 <= waited < 4, waited
        assert "the tracking store optuna at postgresql://postgres@127.0.0.1/optuna has been unreachable for 2 s" in info.value.line()
        assert isinstance(classify(info.value), StoreUnavailable) and info.value.exit_code == 3
        engine.dispose()
    print(f"trials told: {len(told)}, rows inserted: {len(inserted)}; said: {lines}")
