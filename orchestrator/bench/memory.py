"""Peak training-step memory per method, each measured alone in a fresh subprocess.

``measure_memory(backbone_spec, jobs, ...)`` starts one Python process
(``python -m orchestrator.bench.memory``) that loads the backbone once and then, for each job
in turn: frees the previous model, builds the method (own backbone copy, optimizer, batch),
and runs ``steps`` training steps (the first allocates AdamW's state) inside a measurement
window. Every job first runs once on a tiny random BERT, unmeasured (``prime``), so the
process's one-time costs (autograd/OpenMP threads, kernels paged in, lazy imports) are paid
before any window opens.

* **CUDA**: ``peak_mb = torch.cuda.max_memory_allocated()`` over the window (reset at its
  start, after the previous job's tensors are gone): weights + gradients + optimizer state +
  activations of this method alone.
* **CPU**: torch's CPU allocator exposes no peak, so the process RSS is used.
  Before the window: ``gc.collect()`` and glibc ``malloc_trim(0)`` (freed heap pages go back
  to the OS, so earlier jobs' memory cannot be silently reused), then the kernel's RSS
  high-water mark is reset (``echo 5 > /proc/self/clear_refs``). After the window:
  ``growth = VmHWM − RSS at the start`` is everything the steps added (gradients, optimizer
  state, activations, allocator slack) and ``peak_mb = weights_mb + growth`` with
  ``weights_mb`` the exact bytes of the model's parameters and buffers — the CPU analogue of
  the CUDA figure. (Without clear_refs a 1 ms RSS sampling thread stands in; it can miss
  sub-millisecond spikes.) Checked on MiniLM, 16 × 128: a job measured after others in the
  shared subprocess agrees with the same job alone in its own process within ~5% (glibc's
  adaptive mmap threshold, raised by earlier jobs' frees, changes what a later job touches).

``isolate=False`` runs the same measurement in the calling process (tests; less clean, the
caller's own allocations share the heap; passing the caller's ``backbone`` says the process
has trained these models already, so the priming pass is skipped).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from orchestrator.bench.contenders import build_contender
from orchestrator.bench.peft_peer import Unsupported, one_line
from orchestrator.bench.workload import Workload, job_key, load_spec_backbone

MB = 2**20


# ------------------------------------------------------------------ process memory (Linux)


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: best effort


def trim(collect: bool = True) -> None:
    """Free what can be freed and hand free heap pages back to the OS."""
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssPeak:
    """Peak RSS inside a ``with`` block: the kernel high-water mark reset at entry, else sampling."""

    def __init__(self) -> None:
        self.start = 0
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "RssPeak":
        self.start = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM after clear_refs"
        except OSError:
            self.method = "RSS sampled every 1 ms"
            self.peak = self.start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())
        else:
            hwm = _status_kb("VmHWM")
            self.peak = max(hwm * 1024 if hwm is not None else 0, rss_bytes())

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.start)


def model_bytes(model) -> int:
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


# ------------------------------------------------------------------ one job, in this process


def measure_job(job: dict[str, Any], backbone, workload, device: str = "cpu", steps: int = 2) -> dict[str, Any]:
    """Peak memory of ``steps`` training steps of one job (see the module docstring)."""
    try:
        c = build_contender(job, backbone, workload, device, check=False)
    except Unsupported as e:
        return {"unsupported": str(e)}
    except Exception as e:
        return {"error": one_line(e)}
    try:
        return measure_steps(c, device, steps, peer=job.get("family") == "peft")
    finally:
        del c
        trim(collect=False)  # reference counting frees the model; the next job's trim() collects cycles


def measure_steps(c, device: str = "cpu", steps: int = 2, peer: bool = False) -> dict[str, Any]:
    """Peak memory of ``steps`` training steps of a built contender ``c`` (its ``model`` and
    ``step``): the measurement window of the module docstring. A step that raises is
    ``{"unsupported": why}`` for a ``peer`` (PEFT), else ``{"error": why}``. The caller
    drops its own reference to ``c`` afterwards."""
    import torch

    cuda = str(device).startswith("cuda")
    weights = model_bytes(c.model)
    trim()  # the previous job's leftovers and this build's temporaries: gone before the window opens
    if cuda:
        torch.cuda.empty_cache()
    times: list[float] = []
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(steps):
                t0 = time.perf_counter()
                c.step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            out = {"peak_mb": torch.cuda.max_memory_allocated() / MB, "weights_mb": weights / MB, "how": "torch.cuda.max_memory_allocated"}
        else:
            with RssPeak() as rp:
                for _ in range(steps):
                    t0 = time.perf_counter()
                    c.step()
                    times.append(time.perf_counter() - t0)
            out = {
                "peak_mb": (weights + rp.growth) / MB,
                "weights_mb": weights / MB,
                "growth_mb": rp.growth / MB,
                "how": f"weights + RSS growth ({rp.method})",
            }
    except Exception as e:
        err = one_line(e)
        return {"unsupported": err} if peer else {"error": err}
    out["steps"] = steps
    out["last_step_ms"] = times[-1] * 1e3
    return out


def prime(jobs: list[dict], layers: int, workload, device: str = "cpu") -> None:
    """Run every job once on a tiny random BERT and throw the numbers away: the one-time costs
    of a process's first training step (autograd and OpenMP threads, kernel code paged in,
    PEFT's lazy imports) then do not land on whichever job happens to be measured first."""
    from dataclasses import replace

    tiny = load_spec_backbone({"random": {
        "vocab_size": 200, "hidden_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 512,
    }})  # fmt: skip
    small = replace(workload, batch=2, length=min(16, workload.length), prompt_length=min(4, workload.prompt_length))
    for job in jobs:
        measure_job(job, tiny, small, device, steps=1)


def measure_in_process(
    backbone_spec: dict, jobs: list[dict], workload, device: str = "cpu", steps: int = 2, backbone=None, primed: bool = False
) -> dict[str, Any]:
    """``primed``: this process has already trained these kinds of models (else ``prime`` first)."""
    backbone = backbone if backbone is not None else load_spec_backbone(backbone_spec)
    gc.collect()
    gc.freeze()  # what exists now (modules, the backbone) is never garbage: keep each job's gc.collect() short
    try:
        if not primed:
            prime(jobs, backbone.config.num_hidden_layers, workload, device)
        return {job_key(job): measure_job(job, backbone, workload, device, steps) for job in jobs}
    finally:
        gc.unfreeze()


# ------------------------------------------------------------------ the subprocess


def measure_memory(
    backbone_spec: dict,
    jobs: list[dict],
    workload,
    device: str = "cpu",
    steps: int = 2,
    threads: Optional[int] = None,
    isolate: bool = True,
    timeout_s: float = 1800,
    backbone=None,
) -> dict[str, Any]:
    """{"family/name": {peak_mb, weights_mb, ...} | {"unsupported": why} | {"error": why}}."""
    if not jobs:
        return {}
    if not isolate:
        return measure_in_process(backbone_spec, jobs, workload, device, steps, backbone, primed=backbone is not None)
    request = {
        "backbone": backbone_spec, "jobs": jobs, "workload": workload.to_dict(),
        "device": device, "steps": steps, "threads": threads,
    }  # fmt: skip
    out = run_module("orchestrator.bench.memory", request, timeout_s)
    if "error" in out:
        return {f"{j['family']}/{j['name']}": {"error": out["error"]} for j in jobs}
    return out["result"]


def run_module(module: str, request: dict[str, Any], timeout_s: float = 1800) -> dict[str, Any]:
    """``python -m module`` in a fresh process, ``request`` as JSON on its stdin; its last JSON
    line on stdout. -> {"result": that} | {"error": one line}"""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module], input=json.dumps(request), capture_output=True, text=True, timeout=timeout_s, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"memory subprocess timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"error": f"memory subprocess failed (exit {proc.returncode}): {tail}"}
    return {"result": json.loads(lines[-1])}


def serve(measure: Callable[[dict[str, Any]], Any]) -> None:
    """The other end of :func:`run_module`, the body of a bench module's ``python -m`` entry:
    the JSON request from stdin, the torch threads it names, then ``measure(request)`` as one
    JSON line on stdout."""
    import warnings

    warnings.filterwarnings("ignore")
    req = json.loads(sys.stdin.read())
    import torch

    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    sys.stdout.write(json.dumps(measure(req)) + "\n")
    sys.stdout.flush()


def _main() -> None:
    serve(lambda req: measure_in_process(req["backbone"], req["jobs"], Workload(**req["workload"]), req["device"], int(req["steps"])))


if __name__ == "__main__":
    _main()
