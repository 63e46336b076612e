"""The bench's provenance block and its printed tables."""

from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

from ptcore import runinfo

from orchestrator.execution.progress import fmt_value


def _version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_warning(load_avg: Optional[list], cpus: Optional[int]) -> Optional[str]:
    """A note when the machine was busy at the start (timings assume an idle machine)."""
    if not load_avg or not cpus:
        return None
    if load_avg[0] > 0.5 * cpus:
        return (f"the machine was busy (1-min load {load_avg[0]:.1f} on {cpus} CPUs at the start): step times, MFU and "
                f"orchestration CPU figures are inflated and noisy; rerun on an idle machine")  # fmt: skip
    return None


def meta(**settings: Any) -> dict[str, Any]:
    """Versions, commit, CPU/threads and the run's settings (no host name); pass
    ``load_avg_at_start`` (``os.getloadavg()`` when the run began) among the settings."""
    import platform

    import torch

    git = runinfo.git_info()
    dev = settings.get("device", "cpu")
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "python": platform.python_version(),
            **{n: _version(n) for n in ("torch", "transformers", "peft", "ray", "ptcore")},
        },
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name() if str(dev).startswith("cuda") else _cpu_model(),
    }
    out.update(settings)
    out["load_avg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out["warning"] = load_warning(out.get("load_avg_at_start"), out["cpu_count"])
    return out


def number(v: Any, d: int = 1) -> str:
    """A table cell: ``v`` to ``d`` decimals, ``-`` for a missing or non-finite value (every bench table's)."""
    return "-" if isinstance(v, float) and not math.isfinite(v) else fmt_value(v, d)


def tables(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    parts = []
    m = result.get("meta", {})
    parts.append(
        f"bench: {m.get('backbone', {}).get('name')} batch {m.get('batch')} x {m.get('length')} tokens "
        f"(padding {m.get('padding')}), {m.get('device')}, {m.get('torch_threads')} threads, "
        f"{m.get('repeats')} interleaved rounds after {m.get('warmup')} warm-up; matmul peak "
        f"{number(result.get('matmul_peak_gflops'))} GFLOP/s"
    )
    rows = []
    for fam, entries in (("ptcore", result.get("methods", {})), ("peft", result.get("peft", {}))):
        for name, r in entries.items():
            if "step_ms" not in r:
                rows.append([fam, name, r.get("unsupported") or r.get("error") or "-", "", "", "", "", "", ""])
                continue
            rows.append([
                fam, name, number(r["step_ms"]), number(r.get("ratio_to_finetune"), 2), number(r.get("tokens_per_s"), 0),
                number(r.get("mfu") * 100 if r.get("mfu") is not None else None, 1), number(r.get("peak_mb"), 0),
                number(r.get("peak_ratio_to_finetune"), 2), number(r.get("trainable_pct"), 3),
            ])  # fmt: skip
    parts.append(
        tabulate(rows, headers=["", "method", "step ms", "x finetune", "tokens/s", "MFU %", "peak MB", "peak x ft", "trained %"],
                 tablefmt="github", disable_numparse=True)  # fmt: skip
    )
    large = result.get("large")
    if large:
        lm = large.get("methods", {})
        cells = ", ".join(f"{k} {number(v.get('peak_mb'), 0)} MB" if "peak_mb" in v else f"{k}: {v}" for k, v in lm.items())
        ratio = large.get("ptuning_v2_to_finetune_peak")
        parts.append(
            f"BERT-base-sized peak memory: {cells}; ptuning_v2 / finetune = {number(ratio, 2)} "
            f"(goal <= {large.get('goal_ratio')}: {'met' if large.get('meets_goal') else 'NOT met' if ratio else '-'})"
        )
    orch = result.get("orchestration")
    if orch:
        if "error" in orch:
            parts.append(f"orchestration: error: {orch['error']}")
        elif orch.get("skipped"):
            parts.append("orchestration: skipped")
        else:
            parts.append(
                f"orchestration: {number(orch.get('trial_fixed_cpu_s'))} CPU-s and {number(orch.get('trial_fixed_wall_s'))} lane-s fixed per trial, "
                f"{number(orch.get('trials_per_hour'), 0)} trials/h, overhead share {number((orch.get('overhead_share') or 0) * 100, 0)}% "
                f"(study of {orch['studies'][-1]['runs']} runs: {number(orch.get('study_wall_s'))} s wall, {number(orch.get('in_training_s'))} s training); "
                f"per study {number(orch.get('study_fixed_wall_s'))} s wall and {number(orch.get('study_fixed_cpu_s'))} CPU-s before any run"
            )
            parts.extend(f"  note: {n}" for n in orch.get("notes") or [])
    parts.append(f"total bench wall {number(m.get('wall_s'))} s")
    if m.get("warning"):
        parts.append(f"warning: {m['warning']}")
    return "\n\n".join(parts)
