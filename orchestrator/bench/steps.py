"""Per-method step time, throughput and MFU, measured side by side in one process.

Every contender (ptcore method or PEFT peer) first takes ``warmup`` untimed steps. Then the
timed steps are **interleaved**: round r steps every contender once (A B C …, the order
rotated each round), so load drift on a shared machine hits every method alike. A step is
timed from before the forward to after ``loss.item()`` (CUDA: synchronized), i.e. forward +
loss + backward + clipping + AdamW + scheduler, as in ptcore's loop.

Reported per contender: ``step_ms`` (median over rounds), ``step_ms_min``, ``step_ms_max``,
``tokens_per_s`` (real input tokens per median step), ``mfu`` (useful FLOPs per step / median step time / the
measured matmul peak; see ``flops.py``) and ``ratio_to_finetune``: the median over rounds of
``t_method / t_finetune`` within the same round (paired, so drift cancels); a contender on
the reference kernels (``kernels="reference"``) is paired with fine-tuning on them.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Optional, Sequence

from orchestrator.bench.peft_peer import one_line
from orchestrator.bench.workload import Contender


@contextlib.contextmanager
def torch_threads(threads: Optional[int]):
    """torch's intra-op threads set to ``threads`` (None: left as they are) while the bench runs, restored after."""
    import torch  # deferred: torch stays out of the bench's import (orchestrate --help)

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_interleaved(
    contenders: Sequence[Contender], warmup: int, repeats: int, device: str = "cpu", log=None
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """-> ({key: [seconds per round]}, {key: error}) — a contender whose step raises is
    dropped from the remaining rounds and reported as an error."""
    alive = list(contenders)
    errors: dict[str, str] = {}
    times: dict[str, list[float]] = {c.key: [] for c in contenders}

    def run(c: Contender) -> Optional[float]:
        try:
            _sync(device)
            t0 = time.perf_counter()
            c.step()
            _sync(device)
            return time.perf_counter() - t0
        except Exception as e:  # recorded, never fatal
            errors[c.key] = one_line(e)
            return None

    for c in list(alive):
        for _ in range(warmup):
            if run(c) is None:
                alive.remove(c)
                break
    for r in range(repeats):
        k = r % len(alive) if alive else 0
        for c in alive[k:] + alive[:k]:
            t = run(c)
            if t is None:
                continue
            times[c.key].append(t)
        alive = [c for c in alive if c.key not in errors]
        if log:
            log(f"round {r + 1}/{repeats}: " + " ".join(f"{c.key}={times[c.key][-1] * 1e3:.0f}ms" for c in alive if times[c.key]))
    return times, errors


def summarize(
    contenders: Sequence[Contender],
    times: dict[str, list[float]],
    errors: dict[str, str],
    peak_gflops: Optional[float],
    baseline: str = "ptcore/finetune",
) -> dict[str, dict[str, Any]]:
    """{contender key: statistics} (see the module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for c in contenders:
        # a contender on the reference kernels is compared with fine-tuning on them too
        twin = f"{baseline}_reference_kernels"
        base = times.get(twin if c.info.get("kernels") == "reference" and times.get(twin) else baseline) or []
        ts = times.get(c.key) or []
        if c.key in errors or not ts:
            out[c.key] = {"error": errors.get(c.key, "no timed steps")}
            continue
        med = statistics.median(ts)
        row: dict[str, Any] = {
            "step_ms": med * 1e3,
            "step_ms_min": min(ts) * 1e3,
            "step_ms_max": max(ts) * 1e3,
            "step_ms_all": [round(t * 1e3, 2) for t in ts],
            "tokens_per_s": c.tokens / med,
            "tokens_per_step": c.tokens,
            "trainable_params": c.trainable_params,
            "total_params": c.total_params,
            "trainable_pct": 100.0 * c.trainable_params / max(1, c.total_params),
        }
        if c.flops is not None:
            row["gflop_per_step"] = c.flops["total"] / 1e9
            row["gflop_forward"] = c.flops["forward"] / 1e9
            row["gflop_backward"] = c.flops["backward"] / 1e9
            row["achieved_gflops"] = c.flops["total"] / med / 1e9
            row["mfu"] = row["achieved_gflops"] / peak_gflops if peak_gflops else None
        paired = [t / b for t, b in zip(ts, base)] if base and len(base) == len(ts) else []
        if paired:
            row["ratio_to_finetune"] = statistics.median(paired)
        elif base:
            row["ratio_to_finetune"] = med / statistics.median(base)
        else:
            row["ratio_to_finetune"] = None
        row.update({k: v for k, v in c.info.items() if k not in row})
        out[c.key] = row
    return out
