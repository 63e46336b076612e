"""Prompt checkpoints: only the trainable weights (safetensors) + the run config (JSON).

A P-Tuning v2 checkpoint of MiniLM on CB is ~200 KB; loading it rebuilds the backbone
from its id and restores the prompts and head, giving identical predictions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from safetensors.torch import load_file, save_file

from .backbones import Backbone, load_backbone
from .config import RunConfig
from .errors import DataError
from .model import TaskModel

WEIGHTS = "trainable.safetensors"
CONFIG = "run_config.json"


def write_json_atomic(path: Path, obj: Any, indent: Optional[int] = 2) -> None:
    """Write JSON via a temp file + rename, so a crash never leaves half a file (nor, on an
    error while writing, a stray temp file). ``indent=None``: compact, for large files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent, separators=None if indent is not None else (",", ":"), default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(model: TaskModel, cfg: RunConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"method": cfg.method, "task": cfg.task, "model": cfg.model})
    os.replace(tmp, directory / WEIGHTS)
    write_json_atomic(directory / CONFIG, cfg.model_dump())
    return directory


def load_checkpoint(directory: str | Path, backbone: Optional[Backbone] = None) -> TaskModel:
    """Rebuild the model of a checkpoint: backbone from its id (or the one given) + saved weights."""
    from .train import build_model

    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise DataError(f"{directory} is not a ptcore checkpoint (needs {WEIGHTS} and {CONFIG})")
    cfg = RunConfig(**json.loads((directory / CONFIG).read_text()))
    backbone = backbone or load_backbone(cfg.model, cfg.layers)
    model = build_model(cfg, backbone)
    state = load_file(str(directory / WEIGHTS))
    expected = set(model.trainable_state_dict())
    if set(state) != expected:
        raise DataError(f"{directory}: checkpoint tensors do not match the method ({sorted(set(state) ^ expected)[:3]}...)")
    model.load_state_dict(state, strict=False)
    model.eval()
    return model
