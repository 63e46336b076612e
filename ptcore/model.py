"""The model a run trains: a method's encoder (backbone + prompts) + a task head, or, for a
multi-task run, the one encoder + a head per task; and :func:`build_model`, which makes
either from a :class:`~ptcore.config.RunConfig`.

    single task  TaskModel(encoder, head, kind)               model.view(task) is the model
    tasks a+b+c  MultiTaskModel(encoder, {a: head, b: ..})    model.view(task) a TaskModel over the
                                                              same encoder and that task's head

The training loop (:mod:`ptcore.train`), the checkpoints (:mod:`ptcore.checkpoint`) and the
benchmarks build models here, so none of them imports another to get one.
"""

from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from .backbones import Backbone
from .config import RunConfig, run_spec, task_key, task_names
from .errors import ConfigError
from .families import family_of
from .kernels import install as install_kernels
from .methods import get_method
from .methods.registration import method_family_problem
from .methods.base import PromptEncoder
from .tasks import get_task
from .tasks.kinds import Kind
from .tasks.text_kinds import TextKind, check_format, kind_for

POOLINGS = ("mean", "cls", "pooler", "last")


class TaskModel(nn.Module):
    task_name: Optional[str] = None  # which task the head is for (init_from matches a multi-task checkpoint's heads by it)

    def __init__(self, encoder: PromptEncoder, head: nn.Module, kind: Kind, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} not in {POOLINGS}")
        self.encoder = encoder
        self.head = head
        self.kind = kind
        self.pooling = pooling
        if pooling == "pooler" and getattr(encoder.backbone, "pooler", None) is None:
            raise ConfigError(
                f"pooling 'pooler': this backbone ({encoder.backbone.config.model_type}) has no pooler; use pooling mean or cls"
            )

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,T,H), (N,T) -> (N,H). 'mean' averages the real input tokens (they attend to the
        prompts, so prompts shape it); 'cls' takes position 0; 'pooler' adds the backbone's
        tanh pooler (frozen for prompt methods, as in P-Tuning v2)."""
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":  # the last real token, left or right padding alike
            last = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).argmax(1)  # (N,)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.encoder.backbone.pooler(hidden)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.kind.logits(self, batch)

    def view(self, task: str) -> "TaskModel":
        """The model that trains and evaluates ``task``: this one (it has one task)."""
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: prompts + head (everything, for fine-tuning)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {n: t for n, t in self.state_dict().items() if n in names}

    def param_counts(self) -> tuple[int, int]:
        return count_params(self)


class MultiTaskModel(nn.Module):
    """The shared encoder + a ``ModuleDict`` of heads (``heads.<task_key>``); ``views[task]``
    is a :class:`TaskModel` over the same modules (nothing copied), which the kinds' logits,
    losses and decoders use. A batch holds one task's examples, so each head sees only its own
    task (heads differ in kind and shape) while the shared encoder sees every task."""

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], kinds: dict[str, Any], pooling: str):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({task_key(t): h for t, h in heads.items()})
        self.tasks = list(heads)
        self.views = {t: TaskModel(encoder, heads[t], kinds[t], pooling=pooling) for t in heads}  # not registered: shared
        for t, v in self.views.items():
            v.task_name = t

    def forward(self, batch: dict, task: str) -> torch.Tensor:
        return self.views[task](batch)

    def view(self, task: str) -> TaskModel:
        """The :class:`TaskModel` of ``task``: the shared encoder and that task's head."""
        return self.views[task]

    trainable_state_dict = TaskModel.trainable_state_dict
    param_counts = TaskModel.param_counts


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; shared tensors counted once."""
    params = {id(p): p for p in module.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: RunConfig, backbone: Backbone) -> TaskModel | MultiTaskModel:
    """Method encoder around the backbone, plus the head of each of the run's tasks (their
    kinds' heads; several tasks joined by '+': a :class:`MultiTaskModel`, heads in task order).
    Seeds first, so the prompts and heads start the same for the same seed."""
    seed_everything(cfg.seed)
    tasks = task_names(cfg.task)
    encoder = get_method(cfg.method).encoder_cls(backbone, cfg.method_args)
    kinds = {t: run_kind(cfg, t, backbone) for t in tasks}  # the task's own kind (format head) or its text kind
    if encoder.family.generative and not any(isinstance(k, TextKind) for k in kinds.values()):
        # a head reads a decoder LM's hidden states: its LM head is unused (frozen, so no count calls it trained)
        out, inp = backbone.model.get_output_embeddings(), backbone.model.get_input_embeddings()
        if out is not None and out.weight is not inp.weight:
            out.weight.requires_grad_(False)
    if len(tasks) == 1:
        spec = run_spec(cfg, cfg.task)
        kind = kinds[cfg.task]
        model = TaskModel(encoder, kind.make_head(encoder.hidden_size, spec, cfg.head_dropout), kind, pooling=cfg.pooling)
        model.task_name = cfg.task
    else:
        heads = {t: kinds[t].make_head(encoder.hidden_size, get_task(t), cfg.head_dropout) for t in tasks}
        model = MultiTaskModel(encoder, heads, kinds, cfg.pooling)
    install_kernels(model, cfg.kernels, backbone.model)
    return model


def check_run(cfg: RunConfig, config) -> None:
    """What the backbone's config alone tells against ``cfg``, before any weights load: the
    method runs on its family, each task has the run's format there. One ConfigError line."""
    family = family_of(config)
    why = method_family_problem(cfg.method, family.name, config.model_type)
    why = why or cfg.method_args.family_problem(family.name, config.model_type)
    for task in task_names(cfg.task):
        why = why or check_format(run_spec(cfg, task), cfg.format, family.name)
    if why:
        raise ConfigError(why)


def run_kind(cfg: RunConfig, task: str, backbone: Backbone) -> Kind:
    """The kind that trains ``task`` in this run: by the run's ``format`` on the backbone's family."""
    return kind_for(run_spec(cfg, task), cfg.format, family_of(backbone.config), backbone.tokenizer)
