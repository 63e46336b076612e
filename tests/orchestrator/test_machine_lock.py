"""A second study on the same machine: refused before anything starts (no Ray, no output
dir) while another study runs with a local Ray, with one line naming it; a lock left by a
dead driver never blocks; ``--address local`` and cluster addresses are not held back.
The running study is simulated by another process holding the lock (Ray never starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orch_study_helpers import FIXTURE_DATA, REPO, write_study
from orchestrator.execution.raysession import LOCK_NAME, LocalRayLock, RaySession, machine_lock_path, uses_local_ray
from orchestrator.study import StudyError, load_study

BASE = {
    "name": "second",
    "backbones": [{"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2}],
    "tasks": ["superglue/cb"],
    "methods": [{"name": "ptuning_v2", "fixed": {"prompt_length": 8}}],
    "train": {"epochs": 1},
    "data_dir": str(FIXTURE_DATA),
}


@pytest.fixture
def lock_dir(tmp_path, monkeypatch) -> Path:
    """The machine lock in this test's own temp dir (never the real one in /tmp)."""
    d = tmp_path / "machine"
    d.mkdir()
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TMPDIR", str(d))
    assert machine_lock_path() == d / LOCK_NAME
    return d


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray fails the test."""

    def boom(self):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(RaySession, "_init", boom)


def hold_lock(lock_dir: Path, name: str, out: str, record_pid: str = "os.getpid()") -> subprocess.Popen:
    """Another process holds the machine lock as a running study would (``record_pid``: the
    pid it records). Returns once it holds it."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from orchestrator.execution.raysession import LocalRayLock
        lock = LocalRayLock({name!r}, Path({out!r}))
        lock.info["pid"] = {record_pid}
        with lock:
            print("held", flush=True)
            sys.stdin.read()  # until the test closes stdin
        """
    )
    env = {**os.environ, "TMPDIR": str(lock_dir)}
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def release(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.wait(timeout=30)


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def study(tmp_path: Path, name: str = "second", **over) -> object:
    return load_study(write_study(tmp_path / f"{name}.yaml", {**BASE, "name": name, "output_dir": str(tmp_path / name), **over}))


def test_second_local_study_is_refused_before_anything_starts(tmp_path, lock_dir, no_ray):
    from orchestrator.execution.runner import StudyRunner

    holder = hold_lock(lock_dir, "first", "/data/studies_out/first")
    try:
        ls = study(tmp_path)
        with pytest.raises(StudyError) as e:
            StudyRunner(ls).run()
    finally:
        release(holder)
    msg = str(e.value)
    assert "\n" not in msg
    assert "study 'first' is already running on this machine" in msg
    assert f"pid {holder.pid}" in msg and "output /data/studies_out/first" in msg
    assert "--address auto" in msg and "--address local" in msg and "Wait for it to finish" in msg
    assert not (tmp_path / "second").exists()  # nothing written: no output dir, no lock file there


def test_cli_prints_one_error_line_and_exits_2(tmp_path, lock_dir):
    holder = hold_lock(lock_dir, "first", "/data/studies_out/first")
    try:
        path = write_study(tmp_path / "second.yaml", {**BASE, "output_dir": str(tmp_path / "second")})
        r = subprocess.run(
            [sys.executable, "-c", "import sys; from orchestrator.execution.runner import StudyRunner; from orchestrator.study import load_study; "
             "from orchestrator.cli.app import main; import orchestrator.execution.raysession as rs; "
             "rs.RaySession._init = lambda self: sys.exit('Ray was started'); "
             f"sys.exit(main(['study', {str(path)!r}]))"],
            cwd=REPO, env={**os.environ, "TMPDIR": str(lock_dir)}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        release(holder)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: study 'first' is already running on this machine"), r.stderr[-3000:]


def test_same_output_dir_names_the_dir(tmp_path, lock_dir, no_ray):
    from orchestrator.execution.runner import StudyRunner

    holder = hold_lock(lock_dir, "second", str(tmp_path / "second"))
    try:
        with pytest.raises(StudyError) as e:
            StudyRunner(study(tmp_path)).run()
    finally:
        release(holder)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'second'}: another `orchestrate study` (pid {holder.pid}) is running on this output dir")
    assert "--output-dir" in msg and "\n" not in msg


def test_output_dir_lock_message_names_the_pid(tmp_path):
    """The output-dir lock (a study on a cluster, no machine lock): one line with the holder's pid."""
    from orchestrator.ledger.outdir import OutputDir

    ls = study(tmp_path)
    code = (
        "import sys; from orchestrator.ledger.outdir import _Lock; from pathlib import Path\n"
        f"with _Lock(Path({str(ls.output_dir / '.lock')!r})):\n    print('held', flush=True); sys.stdin.read()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    try:
        with pytest.raises(StudyError) as e:
            with OutputDir(ls).lock():
                pass
    finally:
        release(p)
    assert str(e.value) == (
        f"{ls.output_dir}: another `orchestrate study` (pid {p.pid}) is running on this output dir; "
        "wait for it to finish (or stop it), or pass --output-dir DIR for a separate study"
    )


def test_stale_lock_of_a_dead_driver_never_blocks(tmp_path, lock_dir):
    # a file left by a driver killed with -9 (the kernel dropped its flock): taken over
    (lock_dir / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "study": "gone", "output_dir": "/x"}))
    ls = study(tmp_path)
    with RaySession(ls, None, False).machine_lock() as lock:
        assert lock.fd is not None
        assert json.loads((lock_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert json.loads((lock_dir / LOCK_NAME).read_text())["study"] == "second"
    # held by a process whose recorded driver is dead (a child its driver forked): not blocking either
    holder = hold_lock(lock_dir, "gone", "/x", record_pid=str(dead_pid()))
    try:
        with RaySession(ls, None, False).machine_lock() as lock:
            assert lock.fd is None  # runs, without the lock it cannot take
    finally:
        release(holder)
    # released on exit: the next study takes it
    with LocalRayLock("third", tmp_path / "third") as lock:
        assert lock.fd is not None


def test_address_local_and_clusters_are_not_held_back(tmp_path, lock_dir, monkeypatch):
    ls = study(tmp_path)
    holder = hold_lock(lock_dir, "first", "/data/studies_out/first")
    try:
        with RaySession(ls, "local", False).machine_lock():  # asked for a second local Ray
            pass
        for address in ("auto", "ray://head:10001", "10.0.0.1:6379"):
            with RaySession(ls, address, False).machine_lock():  # a cluster: no local Ray
                pass
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
        with RaySession(ls, None, False).machine_lock():
            pass
        monkeypatch.delenv("RAY_ADDRESS")
        with pytest.raises(StudyError, match="already running on this machine"):
            with RaySession(ls, None, False).machine_lock():
                pass
    finally:
        release(holder)


def test_uses_local_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert uses_local_ray(None) and uses_local_ray("") and uses_local_ray("local")
    assert not uses_local_ray("auto") and not uses_local_ray("ray://h:10001")
    monkeypatch.setenv("RAY_ADDRESS", "h:6379")
    assert not uses_local_ray(None) and uses_local_ray("local")
