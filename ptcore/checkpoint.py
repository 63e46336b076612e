"""Prompt checkpoints: only the trainable weights (safetensors) + the run config (JSON).

A P-Tuning v2 checkpoint of MiniLM on CB is ~200 KB; loading it rebuilds the backbone
from its id and restores the prompts and head, giving identical predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file, save_file

from .backbones import Backbone, load_backbone
from .config import RunConfig
from .errors import DataError
from .fileio import atomic_path, write_json_atomic
from .model import TaskModel

WEIGHTS = "trainable.safetensors"
CONFIG = "run_config.json"


def save_checkpoint(model: TaskModel, cfg: RunConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:  # atomic, with the umask's mode (as every output file)
        save_file(state, str(tmp), metadata={"method": cfg.method, "task": cfg.task, "model": cfg.model})
    write_json_atomic(directory / CONFIG, cfg.model_dump())
    return directory


def load_checkpoint(directory: str | Path, backbone: Optional[Backbone] = None) -> TaskModel:
    """Rebuild the model of a checkpoint: backbone from its id (or the one given) + saved weights."""
    from .train import build_model

    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise DataError(f"{directory} is not a ptcore checkpoint (needs {WEIGHTS} and {CONFIG})")
    cfg = RunConfig(**json.loads((directory / CONFIG).read_text()))
    backbone = backbone or load_backbone(cfg.model, cfg.layers, trust_remote_code=cfg.trust_remote_code)
    model = build_model(cfg, backbone)
    state = load_file(str(directory / WEIGHTS))
    expected = set(model.trainable_state_dict())
    if set(state) != expected:
        raise DataError(f"{directory}: checkpoint tensors do not match the method ({sorted(set(state) ^ expected)[:3]}...)")
    model.load_state_dict(state, strict=False)
    model.eval()
    return model
