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
from .config import RunConfig, task_key, task_names
from .errors import ConfigError, DataError
from .fileio import atomic_path, write_json_atomic
from .model import MultiTaskModel, TaskModel, build_model

WEIGHTS = "trainable.safetensors"
CONFIG = "run_config.json"


def save_checkpoint(model: TaskModel | MultiTaskModel, cfg: RunConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:  # atomic, with the umask's mode (as every output file)
        save_file(state, str(tmp), metadata={"method": cfg.method, "task": cfg.task, "model": cfg.model})
    write_json_atomic(directory / CONFIG, cfg.model_dump())
    return directory


def load_init(model: TaskModel | MultiTaskModel, directory: str | Path) -> str:
    """Start ``model`` (a :class:`TaskModel` or a multi-task model) from the trained tensors of
    the checkpoint in ``directory``: its encoder's (prompts; for ``dynamic`` also the selector
    and pool networks; for fine-tuning and LoRA the backbone's trained weights), and the head
    of each of the model's tasks that the checkpoint has (a multi-task checkpoint keeps one per
    task; a single-task one its own task's). Other heads start fresh. This is P-Tuning v2's
    MPT-2: prompts pre-trained on several tasks, then trained on one. Returns what was loaded,
    for the result record. A checkpoint of another method, option set or backbone is refused."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise ConfigError(f"init_from {str(directory)!r} is not a ptcore checkpoint directory (needs {WEIGHTS} and {CONFIG})")
    saved_cfg = json.loads((directory / CONFIG).read_text())
    saved = load_file(str(directory / WEIGHTS))
    mine = model.trainable_state_dict()
    enc_mine = {n: t for n, t in mine.items() if n.startswith("encoder.")}
    enc_saved = {n: t for n, t in saved.items() if n.startswith("encoder.")}
    misfit = sorted(set(enc_mine) ^ set(enc_saved)) or sorted(n for n in enc_mine if enc_mine[n].shape != enc_saved[n].shape)
    if misfit:
        raise ConfigError(
            f"init_from {str(directory)!r}: its trained tensors do not fit this run (it trained {saved_cfg.get('method')} "
            f"{saved_cfg.get('method_args') or {}} on {saved_cfg.get('model')}; first mismatch: {misfit[0]}); "
            f"use a checkpoint of the same method, options and backbone"
        )
    load = dict(enc_saved)
    heads = []
    multi = isinstance(model, MultiTaskModel)
    saved_tasks = task_names(saved_cfg.get("task", ""))
    for task in (model.tasks if multi else [getattr(model, "task_name", None)]):
        key = task_key(task)
        target = f"heads.{key}." if multi else "head."
        for source in (f"heads.{key}.", "head." if saved_tasks == [task] else None):
            got = {target + n[len(source):]: t for n, t in saved.items() if source and n.startswith(source)}
            if got and set(got) <= set(mine) and all(mine[n].shape == t.shape for n, t in got.items()):
                load.update(got)
                heads.append(task)
                break
    model.load_state_dict(load, strict=False)
    what = "prompts" if heads == [] else f"prompts + the head of {', '.join(heads)}"
    return f"{what} from {directory} ({saved_cfg.get('method')} on {saved_cfg.get('task')})"


def load_checkpoint(directory: str | Path, backbone: Optional[Backbone] = None) -> TaskModel | MultiTaskModel:
    """Rebuild the model of a checkpoint: backbone from its id (or the one given) + saved weights."""
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
