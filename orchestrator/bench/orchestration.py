"""What orchestration costs: two tiny studies that differ only in the number of search trials.

Both studies: the packaged MiniLM cut to 2 layers, SuperGLUE CB, P-Tuning v2 with the learning
rate searched, 16 train / 16 eval examples, 1 epoch, one final seed; ``budget.trials_per_cell``
is ``small`` in one and ``large`` in the other (4 vs 10; ``--quick``: 2 vs 6). Each runs through
``orchestrator.execution.runner.run_study`` (local Ray, ``max_concurrent`` lanes) in this process, and for
each we measure:

* ``wall_s`` — the whole ``run_study`` call (Ray start to shutdown);
* ``cpu_s`` — CPU seconds of the **process tree** under this process (the driver, Ray's
  daemons, every trial/Train/worker process): ``/proc/<pid>/stat`` ``utime+stime`` of every
  process whose parent chain leads here, sampled every 0.25 s, each process counted at its
  last sample; plus the CPU of exited children the driver reaped (``os.times``) when that is
  larger. A process's last < 0.25 s is missed, so this is a slight under-count.
  ``machine_cpu_s`` (the ``/proc/stat`` delta of the whole machine) is reported beside it:
  it equals ``cpu_s`` only on an otherwise idle machine;
* ``in_training_s`` — the sum of ``train_s`` (time inside the training-step loop) over the
  study's ``results.csv`` rows; ``runs`` — the number of rows.

From the two sizes (Δ = large − small):

* ``trial_fixed_cpu_s = Δcpu_s/Δruns − mean train_s per run`` — the CPU a run costs beyond its
  training steps (a run trains on one core: Ray gives each worker one CPU and one torch thread);
* ``trial_fixed_wall_s = lanes·Δwall_s/Δruns − mean train_s per run`` — lane-seconds a run holds
  beyond its training steps;
* ``trials_per_hour = 3600·Δruns/Δwall_s`` (marginal throughput);
* ``overhead_share = 1 − in_training_s/(wall_s·lanes)`` of the larger study;
* ``study_fixed_cpu_s`` / ``study_fixed_wall_s`` — the intercepts (cost of a study with no
  runs: Ray start and shutdown, Tune, MLflow, phase changes).

A "trial" here is a run (a ``results.csv`` row). Where the runner packs several runs into one
Ray trial, their start-up is shared, and the marginal cost of a run approaches its training
time; the fixed costs then show up in the intercepts instead.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from orchestrator.bench.peft_peer import one_line
from orchestrator.execution.runner import run_study
from orchestrator.study import load_study

LANES = 2


# ------------------------------------------------------------------ CPU accounting


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _read_stat(pid: str) -> Optional[tuple[int, int, float]]:
    """(ppid, starttime, utime+stime seconds) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # fields after "pid (comm)"
    ppid, utime, stime, start = int(rest[1]), int(rest[11]), int(rest[12]), int(rest[19])
    return ppid, start, (utime + stime) / _clock_ticks()


def machine_cpu_s() -> Optional[float]:
    """Busy CPU seconds of the whole machine since boot (/proc/stat, all but idle + iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _clock_ticks()


class TreeCpu:
    """CPU seconds of this process and all its descendants while the ``with`` block runs."""

    def __init__(self, interval: float = 0.25, root: Optional[int] = None):
        self.interval = interval
        self.root = root or os.getpid()
        self.seen: dict[tuple[int, int], float] = {}  # (pid, starttime) -> last utime+stime
        self.before: dict[tuple[int, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        procs: dict[int, tuple[int, int, float]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _read_stat(name)
                if st is not None:
                    procs[int(name)] = st
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid in procs:
                _, start, cpu = procs[pid]
                key = (pid, start)
                self.seen[key] = max(cpu, self.seen.get(key, 0.0))
            stack.extend(children.get(pid, []))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "TreeCpu":
        self.sample()
        self.before = dict(self.seen)
        t = os.times()
        self._reaped0 = t.children_user + t.children_system
        self._own0 = t.user + t.system
        self._machine0 = machine_cpu_s()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        t = os.times()
        sampled = sum(v - self.before.get(k, 0.0) for k, v in self.seen.items())
        reaped = (t.children_user + t.children_system) - self._reaped0
        own = (t.user + t.system) - self._own0
        live_children = sum(v - self.before.get(k, 0.0) for k, v in self.seen.items() if k[0] != self.root and self._alive(k))
        self.sampled_s = sampled
        self.exact_s = own + reaped + live_children  # exact for reaped + live processes, blind to orphans
        self.cpu_s = max(self.sampled_s, self.exact_s)
        m1 = machine_cpu_s()
        self.machine_s = (m1 - self._machine0) if (m1 is not None and self._machine0 is not None) else None

    @staticmethod
    def _alive(key: tuple[int, int]) -> bool:
        st = _read_stat(str(key[0]))
        return st is not None and st[1] == key[1]


# ------------------------------------------------------------------ the studies


def study_raw(name: str, trials_per_cell: int, out_dir: Path, data_dir: str, model: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "orchestrate bench: orchestration overhead probe",
        "backbones": [{"id": model, "layers": 2, "label": "MiniLM-L2"}],
        "tasks": ["superglue/cb"],
        "methods": [
            {"name": "ptuning_v2", "fixed": {"prompt_length": 16},
             "search": {"lr": {"type": "loguniform", "low": 3.0e-3, "high": 3.0e-2}}},
        ],
        "train": {"epochs": 1, "batch_size": 8, "max_length": 128, "max_train_examples": 16, "max_eval_examples": 16},
        "budget": {"trials_per_cell": trials_per_cell, "max_concurrent": LANES, "grace_period": 1, "seed": 0},
        "final": {"seeds": [0]},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        "data_dir": data_dir,
        "ray": {"num_cpus": max(LANES, os.cpu_count() or LANES)},
        "output_dir": str(out_dir),
    }  # fmt: skip


def read_results(path: Path) -> tuple[int, float, dict[str, int]]:
    """(rows, sum of train_s, rows per status) of a results.csv."""
    rows, train, status = 0, 0.0, {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows += 1
            status[row.get("status") or "?"] = status.get(row.get("status") or "?", 0) + 1
            try:
                train += float(row.get("train_s") or 0.0)
            except ValueError:
                pass
    return rows, train, status


def run_one(path: Path, log=None) -> dict[str, Any]:
    """Run one study file and measure it."""
    ls = load_study(path)
    with TreeCpu() as cpu:
        t0 = time.perf_counter()
        run_study(ls, write=log) if log is not None else run_study(ls)
        wall = time.perf_counter() - t0
    rows, train, status = read_results(ls.output_dir / "results.csv")
    return {
        "trials_per_cell": ls.study.budget.trials_per_cell,
        "runs": rows,
        "status": status,
        "wall_s": wall,
        "cpu_s": cpu.cpu_s,
        "processes_seen": len(cpu.seen),
        "cpu_sampled_s": cpu.sampled_s,
        "cpu_reaped_or_live_s": cpu.exact_s,
        "machine_cpu_s": cpu.machine_s,
        "in_training_s": train,
    }


def derive(small: dict[str, Any], large: dict[str, Any], lanes: int = LANES) -> dict[str, Any]:
    """The per-trial fixed costs from two study sizes (see the module docstring)."""
    d_runs = large["runs"] - small["runs"]
    if d_runs <= 0:
        raise ValueError(f"the larger study ran no more runs ({large['runs']}) than the smaller ({small['runs']})")
    mean_train = (small["in_training_s"] + large["in_training_s"]) / (small["runs"] + large["runs"])
    cpu_slope = (large["cpu_s"] - small["cpu_s"]) / d_runs
    wall_slope = (large["wall_s"] - small["wall_s"]) / d_runs
    notes = []
    if wall_slope <= 0:
        notes.append(
            f"the larger study was not slower ({large['wall_s']:.1f} s vs {small['wall_s']:.1f} s): the per-trial wall cost "
            f"is below this measurement's noise (Ray start-up dominates); trials_per_hour is left out"
        )
    if cpu_slope <= mean_train:
        notes.append("the extra runs cost no more CPU than their training: per-trial CPU overhead below the noise")
    return {
        "notes": notes,
        "trial_fixed_cpu_s": cpu_slope - mean_train,
        "trial_fixed_wall_s": lanes * wall_slope - mean_train,
        "trials_per_hour": 3600.0 / wall_slope if wall_slope > 0 else None,
        "overhead_share": 1.0 - large["in_training_s"] / (large["wall_s"] * lanes),
        "study_wall_s": large["wall_s"],
        "in_training_s": large["in_training_s"],
        "study_fixed_cpu_s": small["cpu_s"] - cpu_slope * small["runs"],  # intercept: Ray/Tune/MLflow start-up, phases
        "study_fixed_wall_s": small["wall_s"] - wall_slope * small["runs"],
        "cpu_s_per_run": cpu_slope,
        "wall_s_per_run": wall_slope,
        "mean_train_s_per_run": mean_train,
        "lanes": lanes,
    }


def bench_orchestration(quick: bool, data_dir: Optional[str] = None, model: str = "sentence-transformers/all-MiniLM-L6-v2",
                        keep: bool = False, log=None) -> dict[str, Any]:  # fmt: skip
    """Run the two studies and derive the orchestration costs; any failure -> {"error": ...}."""
    data_dir = data_dir or os.environ.get("PTCORE_DATA_DIR")
    if not data_dir or not Path(data_dir).is_dir():
        return {"error": f"no data directory ({data_dir or 'pass --data-dir or set PTCORE_DATA_DIR'}): superglue/CB is needed"}
    sizes = (2, 6) if quick else (4, 10)
    tmp = Path(tempfile.mkdtemp(prefix="ptcore-bench-orch-"))
    out: dict[str, Any] = {"sizes": list(sizes), "machine": "cpu_s is the process tree; machine_cpu_s is meaningful only on an idle machine"}
    try:
        studies = []
        for n in sizes:
            path = tmp / f"bench_orch_{n}.yaml"
            import yaml

            raw = study_raw(f"bench_orch_{n}", n, tmp / f"out_{n}", str(Path(data_dir).resolve()), model)
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
            studies.append(run_one(path, log))
        out["studies"] = studies
        out.update(derive(studies[0], studies[1]))
    except BaseException as e:  # a broken runner / Ray must not take the bench down
        if isinstance(e, KeyboardInterrupt):
            raise
        out["error"] = one_line(e)
        out["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    finally:
        if keep:
            out["dir"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
