"""``orchestrate ui`` as a real process: its MLflow tree (~15 processes) ends with it, on
SIGTERM and on Ctrl-C (SIGINT); a busy port is refused before anything starts; MLflow
failing is a failure. Every test checks that no process is left behind (:func:`leftovers`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
TAG = "PTCORE_TEST_PROCESS_TAG"


# ------------------------------------------------------------------ helpers (reusable)


BEFORE: dict[str, set[int]] = {}  # tag -> pids of this process's descendants when the test began


def leftovers(tag: str, *marks: str) -> list[psutil.Process]:
    """Live processes a test left behind: descendants of this process, and any process that
    carries the test's tag in its environment (inherited by every descendant, also one
    orphaned and re-parented to init) or names one of ``marks`` (e.g. its tmp dir) in its
    command line. Zombies don't count (they run nothing and hold no port)."""
    me = os.getpid()
    earlier = BEFORE.get(tag, set())  # this process's children from before the test (e.g. multiprocessing's resource tracker)
    found = {p.pid: p for p in psutil.Process(me).children(recursive=True) if p.pid not in earlier}
    for p in psutil.process_iter():
        if p.pid == me or p.pid in found:
            continue
        try:
            if p.environ().get(TAG) == tag or any(m in arg for m in marks for arg in p.cmdline()):
                found[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    alive = []
    for p in found.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            continue
    return alive


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            out.append(f"{p.pid} (gone)")
    return out


def kill_leftovers(tag: str, *marks: str) -> None:
    """Cleanup after a failed test: SIGKILL whatever it left (only those processes)."""
    procs = leftovers(tag, *marks)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def wait_for(cond, timeout: float, every: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def study_dir(tmp_path) -> Path:
    """An output dir with a tiny MLflow sqlite store (one experiment)."""
    from mlflow.tracking import MlflowClient

    d = tmp_path / "study"
    d.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}").create_experiment("tiny")
    return d


@pytest.fixture
def tagged_env():
    tag = uuid.uuid4().hex
    BEFORE[tag] = {p.pid for p in psutil.Process().children(recursive=True)}
    env = {**os.environ, TAG: tag, "PYTHONUNBUFFERED": "1"}
    return tag, env


def orchestrate(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


# ------------------------------------------------------------------ tests


@pytest.mark.slow  # MLflow's ~15 processes take 10-15 s to start on 2 cores
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_signal_stops_the_whole_tree(sig, study_dir, tagged_env, tmp_path):
    tag, env = tagged_env
    port = free_port()
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen(orchestrate("ui", str(study_dir), "--port", str(port)), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: http_ok(port) or proc.poll() is not None, 90), "the UI never answered"
        assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
        tree = leftovers(tag, str(study_dir))
        assert len(tree) >= 4, describe(tree)  # orchestrate, mlflow, uvicorn and its workers, job runner...
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        assert rc == 0, (tmp_path / "ui.log").read_text()[-2000:]
        # nothing may survive orchestrate ui: it returns only after the tree is gone
        assert leftovers(tag, str(study_dir)) == [], describe(leftovers(tag, str(study_dir)))
        assert port_is_free(port)
        assert f"MLflow UI stopped ({signal.Signals(sig).name})" in (tmp_path / "ui.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_leftovers(tag, str(study_dir))
        log.close()


def test_ui_busy_port_is_refused_before_anything_starts(study_dir, tagged_env):
    tag, env = tagged_env
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = subprocess.run(orchestrate("ui", str(study_dir), "--port", str(port)), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        left = leftovers(tag, str(study_dir))
    try:
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert f"port {port} " in lines[0] and "already in use" in lines[0] and "--port " in lines[0], lines[0]
        suggested = int(lines[0].rsplit("--port ", 1)[1].split()[0])
        assert suggested != port and port_is_free(suggested)
        assert "MLflow UI on" not in r.stdout  # no URL for a server that never started
        assert left == [], describe(left)
    finally:
        kill_leftovers(tag, str(study_dir))


def test_ui_mlflow_failing_is_a_failure(tmp_path, tagged_env):
    """MLflow exits 1 (the store is not a database): so does orchestrate ui, with one line
    after MLflow's own messages, and nothing left running."""
    tag, env = tagged_env
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mlflow.db").write_text("not a database\n")
    r = subprocess.run(orchestrate("ui", str(bad), "--port", str(free_port())), cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode != 0, (r.stdout, r.stderr[-2000:])
        assert r.stderr.strip().splitlines()[-1].startswith("error: the MLflow UI exited with status "), r.stderr[-2000:]
        assert leftovers(tag, str(bad)) == []
    finally:
        kill_leftovers(tag, str(bad))


@pytest.mark.parametrize(
    "host, port, expect",
    [("127.0.0.1", 0, "a port is 1-65535"), ("127.0.0.1", 70000, "a port is 1-65535"), ("203.0.113.7", 5000, "not an address of this machine")],
)
def test_check_port_one_line(host, port, expect):
    from ptcore.errors import PtcoreError

    from orchestrator.execution.processes import check_port

    with pytest.raises(PtcoreError) as e:
        check_port(host, port)
    assert expect in str(e.value) and "\n" not in str(e.value)


TREE = """
import os, signal, subprocess, sys, time
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
plain = "import time; print('up', flush=True); time.sleep(600)"
kids = [
    subprocess.Popen([sys.executable, "-c", plain], stdout=subprocess.PIPE),                          # same group
    subprocess.Popen([sys.executable, "-c", plain], stdout=subprocess.PIPE, start_new_session=True),  # left the group
    subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE),                       # ignores SIGTERM
    subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, start_new_session=True),
]
for k in kids:
    k.stdout.readline()
print("ready", flush=True)
time.sleep(600)
"""


def test_stop_tree_reaches_every_descendant(tagged_env):
    """The mechanics without MLflow: children in the group, children in sessions of their own,
    and ones that ignore SIGTERM (SIGKILL after the grace period) all end."""
    from orchestrator.execution.processes import stop_tree

    tag, env = tagged_env
    proc = subprocess.Popen([sys.executable, "-c", TREE], env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(leftovers(tag)) == 5
        t0 = time.monotonic()
        stop_tree(proc, grace_s=1.0)
        assert time.monotonic() - t0 < 10
        assert proc.returncode is not None
        assert leftovers(tag) == [], describe(leftovers(tag))
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_leftovers(tag)
