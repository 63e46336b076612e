"""Data-parallel step time and gradient bytes synced: 1 vs N gloo workers at one global batch.

``orchestrate bench --ddp`` times the data-parallel step of ``ptcore.train`` for fine-tuning
and P-Tuning v2: each of N processes (``ptcore.distributed.spawn``) takes its 1/N slice of the
same global batch (B x L tokens, every token real), forward + backward, then the one
all-reduce of the trainable gradients (:meth:`Dist.all_reduce_grads`), clip and AdamW. One
worker runs the same step with all the machine's threads; N workers share them (threads =
cores / N each). Reports the median step, the speed-up over one worker, and the bytes
all-reduced per step. On 2 CPU cores two workers only split the same cores: the figure shows
what the sync and the smaller per-worker matmuls cost, not a cluster's scaling.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Optional

from ptcore.config import make_run_config

from orchestrator.bench.workload import DEFAULT_MODEL, Workload, load_spec_backbone, make_batch

METHODS = {"finetune": {}, "ptuning_v2": {"prompt_length": 16}}


def _steps(method: str, method_args: dict, spec: dict, batch: int, length: int, warmup: int, repeats: int) -> dict[str, Any]:
    """In one rank (or the single worker): median seconds of the data-parallel step."""
    import torch

    from ptcore.distributed import Dist  # deferred: pulls torch (orchestrator.bench docstring)
    from ptcore.model import build_model  # deferred: pulls torch (orchestrator.bench docstring)
    from ptcore.train import make_optimizer, split_batch  # deferred: pulls torch (orchestrator.bench docstring)

    dist = Dist.current()
    backbone = load_spec_backbone(spec)
    wl = Workload(batch=batch, length=length)
    cfg = make_run_config({"task": wl.task, "method": method, "method_args": dict(method_args), "batch_size": batch})
    model = build_model(cfg, backbone)
    model.train()
    params, optimizer, scheduler = make_optimizer(model, cfg.resolved()["lr"], cfg.weight_decay, cfg.warmup_ratio, 10_000)
    full = make_batch(backbone, wl, "cpu")
    full["example_index"] = torch.arange(batch)
    mine = dist.my_slices(split_batch(full, dist.world), 1)[0]  # this rank's B/N sequences
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model.kind.loss(model(mine), mine) * (1.0 / dist.world)  # equal slices: weight 1/N
        loss.backward()
        dist.all_reduce_grads(params, loss.item(), False)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    trainable = sum(p.numel() for p in params)
    return {"median_s": statistics.median(times), "sync_bytes": dist.sync_bytes, "trainable_params": trainable,
            "threads": torch.get_num_threads()}


def measure_ddp(workers: tuple[int, ...] = (1, 2), *, spec: Optional[dict] = None, batch: int = 16, length: int = 128,
                warmup: int = 2, repeats: int = 7, log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    import torch

    from ptcore.distributed import spawn  # deferred: pulls torch (orchestrator.bench docstring)

    spec = spec or {"model": DEFAULT_MODEL}
    say = log or (lambda s: None)
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"batch": batch, "length": length, "cores": cores, "load_start": list(os.getloadavg()), "methods": {}}
    for method, args in METHODS.items():
        rows = {}
        for n in workers:
            say(f"ddp {method} x{n} ...")
            if n == 1:
                before = torch.get_num_threads()
                torch.set_num_threads(cores)
                try:
                    r = _steps(method, args, spec, batch, length, warmup, repeats)
                finally:
                    torch.set_num_threads(before)
            else:
                ranks = spawn(n, _steps, method, args, spec, batch, length, warmup, repeats)
                r = {**ranks[0], "median_s": max(x["median_s"] for x in ranks)}  # the step ends when the slowest rank does
            rows[str(n)] = r
        base = rows[str(workers[0])]["median_s"]
        for r in rows.values():
            r["speedup"] = base / r["median_s"]
        out["methods"][method] = rows
    return out


def ddp_table(res: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = []
    for method, by_n in res["methods"].items():
        for n, r in by_n.items():
            rows.append([method, n, r["threads"], f"{r['median_s'] * 1000:.0f}", f"{r['speedup']:.2f}x",
                         f"{r['sync_bytes']:,}" if r["sync_bytes"] else "-", f"{r['trainable_params']:,}"])
    head = (f"data-parallel step, global batch {res['batch']} x {res['length']} tokens, {res['cores']} cores "
            f"(1-min load at start {res['load_start'][0]:.2f})")
    return head + "\n" + tabulate(rows, headers=["method", "workers", "threads/worker", "step ms", "vs 1 worker", "bytes synced/step", "trainable"], tablefmt="github")
