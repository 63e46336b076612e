"""Every fatal error of ``orchestrate`` ends with one line on stderr and an exit code that says
what to do: 3 for a fault ``--resume`` (or a rerun) gets past, 1 for a bug; the traceback goes
to a file the line names (``<--output>/logs/`` for ``orchestrate run``)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from orchestrator.cli import app
from orchestrator.common import faults


@pytest.fixture(autouse=True)
def _no_logs_dir_left():
    yield
    faults.set_logs_dir(None)


def _run(monkeypatch, tmp_path, capsys, error: BaseException) -> tuple[int, str]:
    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr("ptcore.train.train", boom)
    out = tmp_path / "run"
    rc = app.main(["run", "--task", "superglue/cb", "--method", "ptuning_v2", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return rc, err[0]


def _traceback(line: str) -> Path:
    path = Path(line.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert path.is_file() and "Traceback" in path.read_text()
    return path


def test_a_bug_is_one_line_exit_1_and_a_traceback_file(monkeypatch, tmp_path, capsys):
    rc, line = _run(monkeypatch, tmp_path, capsys, KeyError("no such head"))
    assert rc == faults.EXIT_BUG == 1
    assert line.startswith("error: internal error in orchestrate run: ") and "bug" in line and "no such head" in line
    assert _traceback(line).parent == tmp_path / "run" / "logs"


def test_a_full_disk_is_one_line_exit_3(monkeypatch, tmp_path, capsys):
    rc, line = _run(monkeypatch, tmp_path, capsys, OSError(errno.ENOSPC, "No space left on device", "/data/ckpt"))
    assert rc == faults.EXIT_RESUMABLE == 3
    assert line.startswith("error: disk full at /data/ckpt") and "--resume" in line
    _traceback(line)


def test_out_of_memory_is_one_line_exit_3(monkeypatch, tmp_path, capsys):
    rc, line = _run(monkeypatch, tmp_path, capsys, MemoryError("cannot allocate 4 GiB"))
    assert rc == 3 and line.startswith("error: out of memory: ") and "batch_size" in line
    _traceback(line)


def test_bad_input_stays_exit_2_without_a_traceback_file(tmp_path, capsys):
    assert app.main(["run", "--task", "superglue/nope", "--method", "ptuning_v2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "traceback" not in err[0] and "did you mean" in err[0]
