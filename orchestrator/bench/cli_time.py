"""How long the light commands take, each in a fresh ``python -m orchestrator`` process:
``--help``, ``ls methods``, ``ls tasks``, ``validate`` of a study file. They import no torch
(``tests/orchestrator/test_light_commands.py`` checks that); this measures what a user
waits, start-up included. A benchmark printout (``orchestrate bench --cli``), not a timed test.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]


def commands(study: Optional[str]) -> dict[str, list[str]]:
    cmds = {"--help": ["--help"], "ls methods": ["ls", "methods"], "ls tasks": ["ls", "tasks"]}
    if study:
        cmds[f"validate {os.path.relpath(study, REPO) if study.startswith(str(REPO)) else study}"] = ["validate", study]
    return cmds


def time_command(argv: list[str], repeats: int) -> dict[str, float]:
    """Median and min wall seconds of ``repeats`` fresh processes (one untimed first: the OS file cache)."""
    run = lambda: subprocess.run([sys.executable, "-m", "orchestrator", *argv], capture_output=True, check=True)  # noqa: E731
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "repeats": repeats}


def measure_cli(repeats: int = 5, study: Optional[str] = None, log: Callable[[str], None] = lambda s: None) -> dict:
    study = study if study is not None else (str(REPO / "studies" / "smoke.yaml") if os.environ.get("PTCORE_DATA_DIR") else None)
    subprocess.run([sys.executable, "-c", "pass"], capture_output=True)  # warm the interpreter
    t0 = time.perf_counter()
    for _ in range(repeats):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    python_s = (time.perf_counter() - t0) / repeats
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "python_startup_s": round(python_s, 3), "commands": {}}
    for name, argv in commands(study).items():
        out["commands"][name] = time_command(argv, repeats)
        log(f"  {name}: {out['commands'][name]['median_s']:.2f} s (median of {repeats})")
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def cli_table(res: dict) -> str:
    lines = [f"bare python start-up: {res['python_startup_s']:.2f} s", "command                         median   min"]
    for name, r in res["commands"].items():
        lines.append(f"orchestrate {name:<20}  {r['median_s']:6.2f}s {r['min_s']:6.2f}s")
    return "\n".join(lines)
