"""The machine's measured fp32 matmul peak, the denominator of MFU.

Times square fp32 matmuls (``2·n³`` FLOPs each) at a few sizes with torch's thread count as the
bench runs them, and keeps the best rate: an achievable peak for this machine and BLAS, not
the vendor's spec sheet. On CUDA TF32 is left as torch's default (off for matmuls), so the
peak and the training steps use the same precision.
"""

from __future__ import annotations

import time
from typing import Sequence


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(sizes: Sequence[int] = (2048,), repeats: int = 5, device: str = "cpu") -> dict:
    """Best GFLOP/s over ``repeats`` timed ``n×n @ n×n`` fp32 products per size (one warm-up each).

    -> {"gflops": best, "by_size": {n: best GFLOP/s}, "threads": torch threads, "repeats": repeats}
    """
    import torch

    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    by_size: dict[str, float] = {}
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(dev)
        b = torch.randn(n, n, generator=gen).to(dev)
        c = a @ b  # warm-up: BLAS threads, page faults of the output
        _sync(dev)
        best = float("inf")
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            _sync(dev)
            best = min(best, time.perf_counter() - t0)
        by_size[str(n)] = 2.0 * n**3 / best / 1e9
        del a, b, c
    return {
        "gflops": max(by_size.values()),
        "by_size": by_size,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "device": str(dev),
    }
