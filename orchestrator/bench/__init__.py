"""``orchestrate bench``: ptcore's methods vs fine-tuning vs PEFT, side by side in one process.

One backbone (the packaged all-MiniLM-L6-v2 by default), one synthetic batch (16 × 128 tokens),
one training step as ptcore's loop takes it. Modules, one job each:

* ``peak.py``          the measured fp32 matmul peak (MFU's denominator)
* ``flops.py``         useful FLOPs of one step, counted explicitly (the convention is there)
* ``workload.py``      backbone spec, synthetic batch, building a method + its AdamW step
* ``contenders.py``    a contender from a job: a ptcore method (workload.py) or a PEFT peer
* ``steps.py``         interleaved step timing → step_ms, tokens/s, MFU, ratio to fine-tuning
* ``memory.py``        peak memory per method, each alone in a fresh subprocess
* ``peft_peer.py``     the PEFT methods on the same backbone/batch (or why they cannot run)
* ``large.py``         peak memory at BERT-base size: P-Tuning v2 vs fine-tuning
* ``orchestration.py`` per-trial fixed cost of a Ray study, from two study sizes
* ``report.py``        provenance and the printed tables
* ``generative.py``    ``--generative``: decoder LMs and T5, ptcore's methods beside PEFT's (-> generative.json)
* ``genflops.py``      useful FLOPs of a generative step (the convention is there)
* ``dynamic.py``       ``--dynamic``: dynamic prompting's position estimators beside prompt tuning (-> dynamic.json)

Nothing here is imported by ``orchestrate --help``; heavy imports happen inside the functions:
the package imports without torch (``orchestrate bench --cli`` imports it, and so does every
process the bench starts). ``memory.py`` (and ``large.py``, which uses it) is imported when
it is used: it runs as ``python -m orchestrator.bench.memory``, and a module the package
imported first would run twice there (runpy warns). The same holds for ``generative.py`` and
``dynamic.py`` (their memory rows run as ``python -m orchestrator.bench.generative`` /
``.dynamic``): the package never imports them.
"""

from __future__ import annotations

import gc
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ptcore.fileio import write_json_atomic

from orchestrator.bench.contenders import build_contender
from orchestrator.bench.orchestration import bench_orchestration
from orchestrator.bench.peak import matmul_peak_gflops
from orchestrator.bench.peft_peer import Unsupported, one_line, peer_jobs, peft_version
from orchestrator.bench.report import meta
from orchestrator.bench.steps import summarize, time_interleaved, torch_threads
from orchestrator.bench.workload import DEFAULT_MODEL, Workload, describe_backbone, job_key, load_spec_backbone, ptcore_jobs

DEFAULT_OUTPUT = "reports/bench/bench.json"
QUICK = {"repeats": 3, "warmup": 1, "peak_sizes": (2048,), "peak_repeats": 3}
FULL = {"repeats": 7, "warmup": 2, "peak_sizes": (1024, 2048, 3072), "peak_repeats": 5}


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def finish(result: dict[str, Any], output: Optional[str | Path]) -> dict[str, Any]:
    """A bench's result made JSON-safe (:func:`_clean`) and, with ``output``, written there atomically."""
    result = _clean(result)
    if output:
        write_json_atomic(Path(output), result)
    return result


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_bench(
    quick: bool = False,
    *,
    batch: int = 16,
    length: int = 128,
    padding: str = "none",
    repeats: Optional[int] = None,
    warmup: Optional[int] = None,
    prompt_length: int = 16,
    device: str = "auto",
    threads: Optional[int] = None,
    backbone_spec: Optional[dict] = None,
    methods: Optional[list[str]] = None,
    peft: bool = True,
    peft_names: Optional[list[str]] = None,
    memory: bool = True,
    memory_steps: int = 2,
    isolate_memory: bool = True,
    large: bool = True,
    large_config: Optional[dict] = None,
    orchestration: bool = True,
    data_dir: Optional[str] = None,
    peak_sizes: Optional[tuple[int, ...]] = None,
    output: Optional[str | Path] = DEFAULT_OUTPUT,
    log: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Run the bench; return the result dict (and write it as JSON to ``output``)."""
    settings = dict(locals())
    with torch_threads(threads):
        return _run(**settings)


def _run(quick, *, batch, length, padding, repeats, warmup, prompt_length, device, threads, backbone_spec, methods, peft,
         peft_names, memory, memory_steps, isolate_memory, large, large_config, orchestration, data_dir, peak_sizes,
         output, log) -> dict[str, Any]:  # fmt: skip
    import torch

    from orchestrator.bench.memory import measure_memory  # deferred: memory runs as `python -m` (module docstring)

    say = log or (lambda s: None)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    preset = QUICK if quick else FULL
    repeats = repeats or preset["repeats"]
    warmup = preset["warmup"] if warmup is None else warmup
    dev = resolve_device(device)
    spec = backbone_spec or {"model": DEFAULT_MODEL}
    wl = Workload(batch=batch, length=length, padding=padding, prompt_length=prompt_length)
    result: dict[str, Any] = {}

    # ---- the machine's peak
    say("matmul peak ...")
    peak = matmul_peak_gflops(peak_sizes or preset["peak_sizes"], preset["peak_repeats"], dev)
    result["matmul_peak_gflops"] = peak["gflops"]
    result["matmul_peak"] = peak

    # ---- build every contender on its own copy of one backbone
    backbone = load_spec_backbone(spec)
    layers = backbone.config.num_hidden_layers
    backbone_info = describe_backbone(backbone)
    jobs = ptcore_jobs(quick, layers, prompt_length)
    if methods:
        jobs = [j for j in jobs if j["name"] in methods]
    peers = peer_jobs(quick) if peft else []
    if peft_names:
        peers = [{"name": n, "family": "peft", "peft": n} for n in peft_names]
    out_methods: dict[str, dict] = {}
    out_peft: dict[str, dict] = {}
    contenders = []
    for job in jobs + peers:
        say(f"build {job['family']} {job['name']} ...")
        target = out_peft if job["family"] == "peft" else out_methods
        try:
            contenders.append(build_contender(job, backbone, wl, dev))
            target[job["name"]] = {}
        except Unsupported as e:
            target[job["name"]] = {"unsupported": str(e)}
        except Exception as e:
            target[job["name"]] = {"unsupported" if job["family"] == "peft" else "error": one_line(e)}

    # ---- interleaved timing
    say(f"timing {len(contenders)} methods: {warmup} warm-up + {repeats} interleaved rounds ...")
    times, errors = time_interleaved(contenders, warmup, repeats, dev, log=say)
    stats = summarize(contenders, times, errors, peak["gflops"])
    for c in contenders:
        target = out_peft if c.family == "peft" else out_methods
        row = stats[c.key]
        if c.family == "peft" and "error" in row:
            row = {"unsupported": row["error"]}
        target[c.name] = row
    del contenders
    gc.collect()

    # ---- peak memory, each method alone
    if memory:
        runnable = [j for j in jobs + peers if "step_ms" in (out_peft if j["family"] == "peft" else out_methods)[j["name"]]]
        say(f"peak memory of {len(runnable)} methods ({'one subprocess' if isolate_memory else 'in process'}) ...")
        mem = measure_memory(spec, runnable, wl, dev, memory_steps, torch.get_num_threads(), isolate_memory, backbone=None if isolate_memory else backbone)
        ft_peak = (mem.get("ptcore/finetune") or {}).get("peak_mb")
        for j in runnable:
            target = out_peft if j["family"] == "peft" else out_methods
            m = mem.get(job_key(j), {"error": "not measured"})
            row = target[j["name"]]
            if "peak_mb" in m:
                row["peak_mb"] = m["peak_mb"]
                row["memory"] = {k: v for k, v in m.items() if k != "peak_mb"}
                row["peak_ratio_to_finetune"] = m["peak_mb"] / ft_peak if ft_peak else None
            else:
                row["peak_mb"] = None
                row["memory"] = m
    del backbone
    gc.collect()

    result["methods"] = out_methods
    result["peft"] = out_peft

    # ---- BERT-base-sized memory
    if large:
        say("BERT-base-sized peak memory: finetune vs ptuning_v2 ...")
        from orchestrator.bench.large import bench_large  # deferred: memory runs as `python -m` (module docstring)

        result["large"] = bench_large(wl, dev, memory_steps, torch.get_num_threads(), isolate_memory, large_config)

    # ---- orchestration
    if orchestration:
        say("orchestration: two tiny studies ...")
        result["orchestration"] = bench_orchestration(quick, data_dir, log=say)
    else:
        result["orchestration"] = {"skipped": True}

    result["meta"] = meta(
        quick=quick, device=dev, batch=batch, length=length, padding=padding, repeats=repeats, warmup=warmup,
        prompt_length=prompt_length, memory_steps=memory_steps, task=wl.task,
        backbone=backbone_info,
        peft_installed=peft_version() is not None, wall_s=time.perf_counter() - t_start, load_avg_at_start=load_start,
        flop_convention="orchestrator/bench/flops.py", memory_method="orchestrator/bench/memory.py",
    )  # fmt: skip
    return finish(result, output)


__all__ = ["run_bench", "DEFAULT_OUTPUT"]
