"""Provenance recorded with every result: package versions, git commit, host, and what
decides the arithmetic (:func:`compute`: threads, kernels, device, precision)."""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

PACKAGES = ("ptcore", "torch", "transformers", "peft", "datasets", "safetensors", "ray", "optuna", "mlflow", "numpy", "pandas")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=None)
def git_info(path: str | None = None) -> dict[str, object]:
    """``{"commit": sha or None, "dirty": bool}`` of the checkout holding this package."""
    where = path or str(Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
        return {"commit": sha.stdout.strip(), "dirty": bool(st.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@contextlib.contextmanager
def run_threads(threads: Optional[int]) -> Iterator[None]:
    """The run setting ``threads``: torch's intra-op threads for the run (restored after it);
    None leaves torch's count alone (its default: the cores it sees, or what the caller set,
    e.g. a study's trial or a data-parallel rank). Inter-op threads can only be set before
    torch starts any parallel work, so they are recorded (:func:`compute`), not set."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compute(device: Any, precision: str, kernels: str, attention: Optional[str] = None) -> dict[str, Any]:
    """What decides a run's arithmetic beyond its config, as the run found it: torch's intra-op
    and inter-op threads (a reduction split over more threads adds in another order), the
    kernels setting and the attention implementation the backbone ran, the device (and GPU),
    the precision that ran, torch's version, the CPU's vector instruction set and float32
    matmul precision. ``result.json``'s ``compute``."""
    import torch

    device = torch.device(device)
    out: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "kernels": kernels,
        "attention": attention,
        "device": str(device),
        "gpu": None,
        "precision": precision,
        "torch": torch.__version__,
        "cpu_capability": None,
        "matmul_precision": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        out["device"] = f"cuda:{index}"  # which card "cuda" meant
        out["gpu"] = torch.cuda.get_device_name(index)
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        pass
    return out
