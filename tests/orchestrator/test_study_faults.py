"""Faults a cluster study meets, injected into real studies (``orchestrate study`` in a
subprocess, a local Ray): the tracking database goes away for less and for longer than
``tracking.outage_s``, the output disk fills. For each: the exit code, the one line on stderr
(and the traceback file it names), every row once, no MLflow run left RUNNING, and that
``--resume`` completes the study.

The database faults run on a PostgreSQL server of the test's own (``pg_private``: initdb +
pg_ctl on a free port), never on the shared one at 5432. The disk fills on a small tmpfs the
test mounts where it may (root), else at the ledger writer's failpoint (``ledger.write=enospc``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orch_study_helpers import (  # noqa: F401  (fixture: tiny_bert)
    IDS, Backend, _group_gone, _rows, assert_mlflow_complete, assert_optuna_complete, assert_results_complete,
    tiny_bert, write_study,
)
from pg_private import PrivatePostgres, available

pytestmark = pytest.mark.slow


def _start(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def _wait_rows(proc: subprocess.Popen, results: Path, n: int, log: Path, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while _rows(results) < n:
        assert proc.poll() is None, log.read_text()[-3000:] + (proc.stderr.read() if proc.stderr else "")
        assert time.time() < deadline, f"fewer than {n} rows in time"
        time.sleep(0.3)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    _group_gone(proc.pid)
    return proc.returncode, err


def _one_error_line(stderr: str) -> str:
    """The last line on stderr: the study's one line (stderr may hold a few notices before it:
    Ray's, and the outage's own start line; never a wall of tracebacks)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    assert len(lines) <= 8 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[-1].startswith("error: "), stderr[-3000:]
    return lines[-1]


def _traceback_file(line: str) -> Path:
    assert "(traceback: " in line, line
    path = Path(line.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert path.is_file() and "Traceback" in path.read_text(), path
    return path


def _complete(out: Path, backend: Backend) -> None:
    import pandas as pd

    df = pd.read_csv(out / "results.csv", dtype=IDS)
    assert_results_complete(df, out)
    assert_mlflow_complete(backend.mlflow_uri(out), "tiny", df)
    assert_optuna_complete(backend.optuna_url(out), "tiny", df)


@pytest.fixture
def private_pg():
    ok, why = available()
    if not ok:
        pytest.skip(why)
    with PrivatePostgres() as pg:
        yield pg


def _pg_backend(pg: PrivatePostgres, tag: str) -> Backend:
    return Backend("postgresql", {"mlflow_uri": pg.url(f"mlflow_{tag}"), "optuna_storage": pg.url(f"optuna_{tag}")})


# ------------------------------------------------------------------ the tracking database goes away


def test_an_outage_shorter_than_the_bound_is_waited_out(tiny_bert, tmp_path, private_pg):
    """PostgreSQL down for 8 s mid-search, tracking.outage_s 120: one line when the stores go,
    one when they are back, and the study finishes as if nothing happened."""
    backend = _pg_backend(private_pg, "short")
    out = tmp_path / "out"
    raw = backend.study(tiny_bert, out)
    raw["tracking"]["outage_s"] = 120
    path = write_study(tmp_path / "tiny.yaml", raw)
    proc = _start([sys.executable, "-m", "orchestrator", "study", str(path)], tmp_path, tmp_path / "study.log")
    _wait_rows(proc, out / "results.csv", 1, tmp_path / "study.log")
    private_pg.outage(8).join()
    rc, err = _finish(proc)
    printed = (tmp_path / "study.log").read_text() + err
    assert rc == 0, printed[-3000:]
    assert "unreachable" in printed and "is back after" in printed, printed[-3000:]
    _complete(out, backend)


def test_an_outage_past_the_bound_stops_cleanly_and_resume_completes(tiny_bert, tmp_path, private_pg):
    """PostgreSQL down for good mid-search, tracking.outage_s 6: exit 3 with one line naming
    the store and --resume, the traceback in <output_dir>/logs/, results.csv whole; with the
    server back, --resume finishes the study with every row once and no run left RUNNING."""
    import pandas as pd

    backend = _pg_backend(private_pg, "long")
    out = tmp_path / "out"
    raw = backend.study(tiny_bert, out)
    raw["tracking"]["outage_s"] = 6
    path = write_study(tmp_path / "tiny.yaml", raw)
    cmd = [sys.executable, "-m", "orchestrator", "study", str(path)]
    proc = _start(cmd, tmp_path, tmp_path / "study.log")
    _wait_rows(proc, out / "results.csv", 1, tmp_path / "study.log")
    private_pg.stop()
    rc, err = _finish(proc, timeout=300)
    line = _one_error_line(err)
    assert rc == 3, err[-3000:]
    assert "tracking store" in line and "--resume" in line and "unreachable" in line, line
    assert _traceback_file(line).parent == out / "logs"
    pd.read_csv(out / "results.csv", dtype=IDS)  # whole: the rows written so far parse

    private_pg.start()
    done = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _complete(out, backend)


# ------------------------------------------------------------------ the disk fills


def _mount_tmpfs(where: Path, size_mb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


def _fill(where: Path) -> Path:
    """Fill the filesystem at ``where`` to the last byte (a filler file)."""
    filler = where / "filler.bin"
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    try:  # the last partial chunk
        with open(filler, "ab") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    return filler


def test_a_full_disk_stops_cleanly_and_resume_completes(tiny_bert, tmp_path):
    """The output directory's disk fills after the first search trial: exit 3, one line naming
    the full disk and --resume, results.csv whole; once there is space, --resume completes it."""
    import pandas as pd

    backend = Backend("sqlite")
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, 96)
    try:
        out = disk / "out"
        path = write_study(tmp_path / "tiny.yaml", backend.study(tiny_bert, out))
        cmd = [sys.executable, "-m", "orchestrator", "study", str(path)]
        env = {} if mounted else {"PTCORE_FAILPOINTS": "ledger.write=enospc", "PTCORE_FAILPOINTS_DIR": str(tmp_path / "fp")}
        if mounted:
            proc = _start(cmd, tmp_path, tmp_path / "study.log")
            _wait_rows(proc, out / "results.csv", 1, tmp_path / "study.log")
            filler = _fill(disk)
        else:  # no tmpfs here: the ledger's writer raises ENOSPC once, on its first write
            proc = _start(cmd, tmp_path, tmp_path / "study.log", env)
            filler = None
        rc, err = _finish(proc, timeout=400)
        line = _one_error_line(err)
        assert rc == 3, err[-3000:]
        assert line.startswith("error: disk full at ") and "--resume" in line, line
        if (out / "results.csv").is_file():
            pd.read_csv(out / "results.csv", dtype=IDS)  # never half-written (atomic rewrite)
        if filler is not None:
            filler.unlink()
        done = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        _complete(out, backend)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
