"""Mixed precision for the training loop: autocast, a GradScaler for fp16, fp32 master weights.

``precision`` (a run setting):

* ``fp32``: no autocast;
* ``bf16``: ``torch.autocast(dtype=bfloat16)`` around forward and loss (CPU and CUDA);
* ``fp16``: autocast to float16 plus a ``GradScaler``: the loss is scaled before backward,
  gradients are unscaled before clipping, and a step whose gradients overflowed is skipped
  (the scale halves) instead of writing inf into the weights;
* ``auto`` (default): fp32 on the CPU, bf16 on a GPU that supports it, else fp32.

Parameters stay float32 whatever runs (autocast casts inside the ops, not the weights), so
the prompts, the head and, in fine-tuning, the backbone keep fp32 master weights and AdamW
updates them in fp32. The run's result records the precision that ran and the steps skipped.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


class Amp:
    """One run's precision: ``with amp.autocast(): loss = ...``; ``amp.backward(loss)``;
    ``amp.step(optimizer, params, max_norm)`` (unscale, clip, step; False when fp16 skipped it)."""

    def __init__(self, precision: str, device: torch.device):
        self.precision = resolve_precision(precision, device)
        self.device = device
        self.dtype: Optional[torch.dtype] = DTYPES.get(self.precision)
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self.skipped = 0  # fp16 steps skipped on overflow

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float) -> bool:
        if self.scaler is None:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
            return True
        self.scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)  # skipped if any gradient is inf/NaN
        self.scaler.update()
        stepped = self.scaler.get_scale() >= before
        self.skipped += not stepped
        return stepped

    def skip_step(self) -> None:
        """fp16: the loss itself overflowed; no backward, the scale halves, the step is skipped."""
        assert self.scaler is not None
        self.scaler.update(self.scaler.get_scale() / 2)
        self.skipped += 1

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
