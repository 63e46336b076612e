"""A run's training state at an epoch boundary: enough to continue it as if it never stopped.

``train()`` keeps its loop variables in a :class:`LoopState`. A callback that wants a run to
survive its process (a Ray Train worker retried after a crash, see
``orchestrator.execution.trial``) saves :func:`save_train_state` beside the epoch's checkpoint;
``train(cfg, resume=directory)`` reads it back and goes on with the next epoch.

What is saved (no pickle: tensors in safetensors, everything else in JSON):

* the trainable weights, and the best epoch's copy of them (``model.*``, ``best.*``);
* AdamW's moments and step counts (``optim.<param index>.<name>``) and its param groups;
* the LR schedule's position, and fp16's loss scale;
* every random stream the next epoch reads: torch's global generator (dropout), CUDA's,
  numpy's and Python's, and the task schedule's (:class:`ptcore.train.TaskSchedule`): the
  training loader's shuffling generator (``rng.loader``); for a multi-task run also the
  generator that draws each step's task and where each task's loader is in its shuffle;
* the loop: epochs done, optimizer steps, epochs without improvement, the epoch history,
  the best epoch's number and dev scores, tokens seen.

Restoring all of it makes the continued run match the uninterrupted one bit for bit on the
same machine (``tests/core/test_trainstate.py``).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import DataError
from .fileio import atomic_path, write_json_atomic

TENSORS = "train_state.safetensors"
META = "train_state.json"
VERSION = 2  # 2: best_dev per task, the task schedule's state


@dataclass
class LoopState:
    """``train()``'s loop variables (everything but the objects that own tensors)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    bad_epochs: int = 0  # epochs since dev last improved (patience)
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = -1
    best_state: Optional[dict[str, torch.Tensor]] = None  # trainable weights of the best epoch
    best_dev: Optional[dict[str, Any]] = None  # its dev scores, per task (task -> metric -> value)
    train_tokens: int = 0
    resumed_at: list[int] = field(default_factory=list)  # epochs this run was continued after


class ScheduleState(Protocol):
    """What a task schedule saves (:class:`ptcore.train.TaskSchedule`): its generators' states
    and positions as tensors (stored as ``rng.<name>``) and anything else as JSON."""

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...


def has_train_state(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / TENSORS).is_file() and (d / META).is_file()


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return {"__float__": repr(v)}
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _json_back(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__float__"}:
            return float(v["__float__"])
        return {k: _json_back(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_back(x) for x in v]
    return v


def save_train_state(directory: str | Path, *, model, optimizer, scheduler, schedule: ScheduleState,
                     loop: LoopState, config_hash: str, amp=None) -> Path:
    """Write the state after ``loop.epoch`` epochs into ``directory`` (atomically, file by file;
    the JSON, written last, marks the pair complete)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.trainable_state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    for k, v in (loop.best_state or {}).items():
        tensors[f"best.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                opt_scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    schedule_tensors, schedule_meta = schedule.state_dict()
    tensors.update({f"rng.{k}": v for k, v in schedule_tensors.items()})
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "version": VERSION,
        "config_hash": config_hash,
        "loop": {
            "epoch": loop.epoch, "step": loop.step, "bad_epochs": loop.bad_epochs, "history": loop.history,
            "best_score": loop.best_score, "best_epoch": loop.best_epoch,
            "best_dev": dict(loop.best_dev) if loop.best_dev is not None else None,
            "train_tokens": int(loop.train_tokens), "resumed_at": loop.resumed_at,
        },
        "optimizer": {"param_groups": opt["param_groups"], "scalars": opt_scalars, "indices": sorted(opt["state"])},
        "scheduler": scheduler.state_dict(),
        "amp": amp.state_dict() if amp is not None else None,
        "schedule": schedule_meta,
        "rng": {
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        },
    }
    with atomic_path(d / TENSORS) as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(d / META, _json_safe(meta), indent=None)
    return d


def load_train_state(directory: str | Path, *, model, optimizer, scheduler, schedule: ScheduleState,
                     config_hash: str, amp=None) -> LoopState:
    """Put the saved state back into ``model``/``optimizer``/``scheduler``/``schedule``/the generators;
    return the loop variables. Refuses a state saved by another configuration."""
    d = Path(directory)
    if not has_train_state(d):
        raise DataError(f"{d}: no training state to resume from (needs {TENSORS} and {META})")
    meta = _json_back(json.loads((d / META).read_text()))
    if meta.get("version") != VERSION:
        raise DataError(f"{d}: training state version {meta.get('version')} (this ptcore reads {VERSION})")
    if meta["config_hash"] != config_hash:
        raise DataError(
            f"{d}: training state of another configuration (hash {meta['config_hash']}, this run {config_hash}); "
            "resume only the run that wrote it"
        )
    tensors = load_file(str(d / TENSORS))
    device = next(model.parameters()).device
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = set(model.trainable_state_dict())
    if set(weights) != expected:
        raise DataError(f"{d}: training state does not match the method's weights ({sorted(set(weights) ^ expected)[:3]}...)")
    model.load_state_dict(weights, strict=False)

    state: dict[int, dict[str, Any]] = {}
    for idx in meta["optimizer"]["indices"]:
        st = dict(meta["optimizer"]["scalars"].get(str(idx), {}))
        prefix = f"optim.{idx}."
        st.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state[int(idx)] = st
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if amp is not None and meta.get("amp"):
        amp.load_state_dict(meta["amp"])

    # the schedule first: putting a loader back where it was may draw from torch's generator
    # (a DataLoader iterator takes a seed from it), which is restored after
    reserved = ("rng.torch", "rng.cuda.")
    schedule.load_state_dict({k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.") and not k.startswith(reserved)},
                             meta.get("schedule") or {})
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["rng"]["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["rng"]["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))

    lp = meta["loop"]
    best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    return LoopState(
        epoch=lp["epoch"], step=lp["step"], bad_epochs=lp["bad_epochs"], history=lp["history"],
        best_score=lp["best_score"], best_epoch=lp["best_epoch"], best_state=best or None, best_dev=lp["best_dev"],
        train_tokens=lp["train_tokens"], resumed_at=list(lp.get("resumed_at", [])),
    )
