"""``orchestrator.common.failpoints``: an armed point kills its process once per marker directory
(a retried or resumed process passes it); an unarmed one does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

CODE = "from orchestrator.common import failpoints; failpoints.hit('a.b'); failpoints.hit('other'); print('passed')"


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTCORE_FAILPOINTS")}
    return subprocess.run([sys.executable, "-c", CODE], env={**env, **env_extra}, capture_output=True, text=True, timeout=60)


def test_armed_point_kills_once(tmp_path):
    armed = {"PTCORE_FAILPOINTS": "x.y, a.b", "PTCORE_FAILPOINTS_DIR": str(tmp_path / "m")}
    first = _run(armed)
    assert first.returncode == -signal.SIGKILL and "passed" not in first.stdout
    assert (tmp_path / "m" / "a.b.fired").read_text().strip().isdigit()
    again = _run(armed)  # fired already: the second process goes on
    assert again.returncode == 0 and again.stdout.strip() == "passed"


def test_unarmed_points_do_nothing(tmp_path):
    assert _run({}).stdout.strip() == "passed"
    assert _run({"PTCORE_FAILPOINTS": "a.b"}).stdout.strip() == "passed"  # no marker dir: not armed
    assert _run({"PTCORE_FAILPOINTS": "a.bc", "PTCORE_FAILPOINTS_DIR": str(tmp_path)}).stdout.strip() == "passed"
    assert not list(tmp_path.iterdir())
