"""Backbone probing: a backbone's layer count from its config alone (no weights, no
download), or why it cannot be checked here (:func:`backbone_layers`)."""

from __future__ import annotations

import difflib
import json
import os
from types import SimpleNamespace
from typing import Optional

from ptcore.backbones import ALIASES, PACKAGED, family_problem, resolve
from ptcore.families import family_name, family_of
from ptcore.errors import ConfigError


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _local_config(source: str):
    """A model directory's ``config.json`` as attributes (``model_type``, ``num_hidden_layers``),
    read without transformers or torch, so ``validate`` stays quick; None for a hub id."""
    path = os.path.join(source, "config.json")
    if not os.path.isdir(source) or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)  # a ValueError on bad JSON: reported as "holds no readable model config"
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ValueError(f"{path} names no model_type")
    return SimpleNamespace(**raw)


def backbone_layers(model_id: str, model: str) -> tuple[Optional[int], Optional[str]]:
    """The layer count of a backbone, read from its config alone (no weights, no download):
    ``(layers, None)``; ``(None, why)`` where it cannot be checked here (a hub id not in the
    local cache: downloaded by the runs, or refused offline by :func:`preflight`). Raises
    :class:`ConfigError` where the backbone can never load: a local path that is no model
    directory, an unsupported family, or (offline) a near miss of a packaged model's name.
    ``model``: the id with a relative path resolved (:func:`_resolve_model`)."""
    if model_id.startswith((".", "/", "~")) and not os.path.isdir(model):
        raise ConfigError(
            f"{model} is not a directory (relative paths are resolved against the study file's directory); point id at a "
            f"directory holding the backbone's config.json, or use a hub id or packaged model (orchestrate ls backbones)"
        )
    source = resolve(model)
    try:
        config = _local_config(source)
        if config is None:  # a hub id: transformers finds it in the cache (and imports torch doing so)
            from transformers import AutoConfig  # local: transformers (and torch) only for a hub id

            config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        if os.path.isdir(source):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"{source} holds no readable model config ({first[:160]}); point id at a directory holding the backbone's "
                f"config.json, weights and tokenizer (save_pretrained's layout)"
            ) from None
        if not _offline():
            return None, f"{model_id}: from the Hugging Face hub (not checked before the runs)"
        close = difflib.get_close_matches(model_id, [*PACKAGED, *ALIASES], n=3, cutoff=0.8)
        if close:
            raise ConfigError(
                f"unknown backbone {model_id!r}: no such local directory or packaged model, and not in the Hugging Face "
                f"cache (HF_HUB_OFFLINE=1); did you mean {' or '.join(repr(c) for c in close)}? (orchestrate ls backbones)"
            ) from None
        return None, (
            f"{model_id}: not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; download it first "
            f"(unset HF_HUB_OFFLINE) or point id at a local directory"
        )
    why = family_problem(config)
    if why:
        raise ConfigError(f"{model_id!r} {why}")
    _FAMILY[model] = family_name(config)
    return family_of(config).num_layers(config), None


_FAMILY: dict[str, Optional[str]] = {}  # model (resolved id) -> its family, for the backbones backbone_layers read


def backbone_family(model: str) -> Optional[str]:
    """The family (ptcore.families) of a backbone :func:`backbone_layers` read, or None (not read here)."""
    return _FAMILY.get(model)
