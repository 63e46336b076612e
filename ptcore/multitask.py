"""Multi-task runs: one method encoder shared by several tasks, a head per task.

    task "superglue/cb+glue/sst2+superglue/rte" (tasks joined by '+')
      -> one encoder (the method's: prompts; for ``dynamic`` also its selector and pool networks)
         + one head per task (its kind's: 3-way CB, 2-way SST-2, ...)
      -> each step: draw a task t with probability p_t, take t's next batch, loss_t, AdamW step
      -> each epoch: every task's dev; select the epoch on the mean of the tasks' primary scores
      -> restore the best epoch; report each task's val (never selected on)

A batch holds one task's examples, so each head sees only its own task (heads differ in
kind and shape) and the shared encoder sees every task. Mixing (``cfg.mixing``), as in T5
(Raffel et al., 2020): ``proportional`` p_t ∝ n_t, the training-set sizes; ``temperature``
p_t ∝ n_t ** (1 / T) (T = ``mixing_temperature``; larger T evens the tasks out, so a
small task like CB is not drowned). An epoch is ceil(sum n_t / batch_size) steps; each task's
loader cycles through its own length-grouped shuffles.

The checkpoint holds the shared encoder's trained tensors (``encoder.*``) and every head
(``heads.<task>.*``); ``init_from`` starts a single-task run from it (P-Tuning v2's
multi-task prompt pre-training, MPT-2; see :func:`ptcore.checkpoint.load_init`).

Multi-task runs train on one worker and start over on a retry (no ``resume``); both are
refused with a clear error rather than run differently.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, MutableMapping, Optional

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .backbones import Backbone, load_backbone
from .config import RunConfig, task_key, task_names
from .distributed import Dist
from .errors import ConfigError, TrainingError
from .kernels import install as install_kernels
from .methods import get_method
from .model import TaskModel
from .precision import Amp
from .result import RunResult
from .tasks import get_task
from .tasks.kinds import get_kind
from .trainstate import LoopState


class MultiTaskModel(nn.Module):
    """The shared encoder + a ``ModuleDict`` of heads; ``views[task]`` is a :class:`TaskModel`
    over the same modules (nothing copied), which the kinds' logits, losses and decoders use."""

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], kinds: dict[str, Any], pooling: str):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({task_key(t): h for t, h in heads.items()})
        self.tasks = list(heads)
        self.views = {t: TaskModel(encoder, heads[t], kinds[t], pooling=pooling) for t in heads}  # not registered: shared

    def forward(self, batch: dict, task: str) -> torch.Tensor:
        return self.views[task](batch)

    trainable_state_dict = TaskModel.trainable_state_dict
    param_counts = TaskModel.param_counts


def build_multitask_model(cfg: RunConfig, backbone: Backbone) -> MultiTaskModel:
    """Encoder built once (seeded first, as :func:`ptcore.train.build_model`), then the heads in task order."""
    from .train import seed_everything

    seed_everything(cfg.seed)
    encoder = get_method(cfg.method).encoder_cls(backbone, cfg.method_args)
    heads, kinds = {}, {}
    for t in task_names(cfg.task):
        spec = get_task(t)
        kinds[t] = get_kind(spec.kind)
        heads[t] = kinds[t].make_head(encoder.hidden_size, spec, cfg.head_dropout)
    model = MultiTaskModel(encoder, heads, kinds, cfg.pooling)
    install_kernels(model, cfg.kernels, backbone.model)
    return model


def mixing_weights(sizes: dict[str, int], mixing: str, temperature: float) -> dict[str, float]:
    """p_t of each task (sums to 1): n_t, or n_t ** (1 / temperature), normalized."""
    power = 1.0 if mixing == "proportional" else 1.0 / temperature
    raw = {t: float(n) ** power for t, n in sizes.items()}
    total = sum(raw.values())
    return {t: r / total for t, r in raw.items()}


def task_schedule(weights: dict[str, float], steps: int, generator: torch.Generator) -> list[str]:
    """The task of each of an epoch's ``steps``, drawn i.i.d. from ``weights`` (seeded)."""
    tasks = list(weights)
    p = torch.tensor([weights[t] for t in tasks], dtype=torch.float64)
    return [tasks[i] for i in torch.multinomial(p, steps, replacement=True, generator=generator).tolist()]


class Cycle:
    """Endless batches of one task: a new length-grouped shuffle each time its loader runs out."""

    def __init__(self, loader, task: str):
        self.loader, self.task, self.it = loader, task, iter(loader)

    def next(self) -> dict:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


def _task_cfg(cfg: RunConfig, task: str) -> RunConfig:
    return cfg.model_copy(update={"task": task})


def train_multitask(
    cfg: RunConfig,
    *,
    backbone: Optional[Backbone] = None,
    callbacks: tuple = (),
    output: Optional[str | Path] = None,
    progress: bool = True,
    cache_dir: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
    data_cache: Optional[MutableMapping[tuple, Any]] = None,
    report: bool = True,
    resume: Optional[str | Path] = None,
) -> RunResult:
    """:func:`ptcore.train.train` for a multi-task ``cfg`` (tasks joined by '+'); same record,
    with each task's scores under ``tasks`` and their means as ``dev`` / ``val``."""
    from .checkpoint import load_init
    from .train import (
        PhaseTimer, Resumable, data_budget, evaluate, make_loader, make_optimizer, pick_device, prepared, provenance, sort_by_length,
    )  # fmt: skip

    if resume is not None:
        raise ConfigError("multi-task runs cannot resume from a saved epoch yet; run it again from the start (ray.max_failures: 0)")
    dist = Dist.current()
    if dist.on:
        raise ConfigError("multi-task runs train on one worker; set workers_per_trial: 1 (or --workers 1)")
    t_start, timer = time.time(), PhaseTimer()
    tasks = task_names(cfg.task)
    resolved, device, config_hash = cfg.resolved(), pick_device(cfg.device), cfg.config_hash()

    # ---- model: backbone + the shared method encoder + a head per task
    with timer("load_s"):
        backbone = backbone or load_backbone(cfg.model, cfg.layers, trust_remote_code=cfg.trust_remote_code)
        model = build_multitask_model(cfg, backbone).to(device)
        init_note = load_init(model, cfg.init_from) if cfg.init_from else None
        trainable, total = model.param_counts()

    # ---- data: each task's splits, prepared exactly as a single-task run of it would be
    with timer("data_s"):
        data = {t: prepared(_task_cfg(cfg, t), backbone, model.encoder.extra_tokens, cache_dir, data_cache) for t in tasks}
        pad_id = backbone.tokenizer.pad_token_id
        gens = {t: torch.Generator().manual_seed(cfg.seed + 1 + i) for i, t in enumerate(tasks)}  # each task's shuffles
        batches = {t: Cycle(make_loader(data[t].features["train"], model.views[t].kind, pad_id, cfg.batch_size, shuffle=True,
                                        generator=gens[t]), t) for t in tasks}
        eval_features = {t: {s: sort_by_length(f) for s, f in data[t].features.items() if s != "train"} for t in tasks}
        eval_loaders = {t: {s: make_loader(f, model.views[t].kind, pad_id, cfg.eval_batch_size, shuffle=False)
                            for s, f in eval_features[t].items()} for t in tasks}
    sizes = {t: len(data[t].features["train"]) for t in tasks}
    weights = mixing_weights(sizes, cfg.mixing, cfg.mixing_temperature)
    schedule_gen = torch.Generator().manual_seed(cfg.seed)  # which task each step trains

    # ---- optimizer: AdamW over the shared encoder's and every head's trainable tensors
    steps_per_epoch = math.ceil(sum(sizes.values()) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    params, optimizer, scheduler = make_optimizer(model, resolved["lr"], cfg.weight_decay, cfg.warmup_ratio, total_steps)
    amp = Amp(cfg.precision, device)
    loop = LoopState()
    state = Resumable(model, optimizer, scheduler, schedule_gen, loop, config_hash, amp)
    seen = dict.fromkeys(tasks, 0)  # training examples drawn per task (the mixture actually trained on)
    train_tokens = 0
    bar = tqdm(total=total_steps, disable=not progress, desc=f"{cfg.method} {cfg.task}", unit="step", leave=False)
    for epoch in range(cfg.epochs):
        model.train()
        t0, losses = time.time(), []
        with timer("train_s"):
            for task in task_schedule(weights, steps_per_epoch, schedule_gen):
                batch = batches[task].next()  # one task's examples: (B,T) ids, its labels
                seen[task] += int(batch["example_index"].shape[0])
                train_tokens += int(batch["attention_mask"].sum())
                aux = model.encoder.on_train_step(loop.step, total_steps)  # e.g. dynamic prompting's Gumbel temperature
                optimizer.zero_grad(set_to_none=True)
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                view = model.views[task]
                with amp.autocast():
                    loss = view.kind.loss(view(batch), batch)  # this task's head and loss
                if not torch.isfinite(loss):
                    if amp.scaler is None:
                        raise TrainingError(
                            f"loss is {loss.item()} at epoch {epoch + 1} step {loop.step} ({cfg.method} on {task} in {cfg.task}, "
                            f"lr={resolved['lr']}); lower the learning rate (--set lr=...) or raise warmup_ratio"
                        )
                    amp.skip_step()
                else:
                    amp.backward(loss)
                    amp.step(optimizer, params, cfg.max_grad_norm)
                    losses.append(loss.item())
                scheduler.step()
                loop.step += 1
                bar.update(1)

        # selection on the mean of the tasks' dev primary scores
        with timer("eval_s"), amp.autocast():
            dev = {t: evaluate(model.views[t], eval_loaders[t]["dev"], eval_features[t]["dev"], data[t].examples["dev"],
                               get_task(t), device) for t in tasks}
        mean_dev = float(np.mean([dev[t]["primary"] for t in tasks]))
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "lr": scheduler.get_last_lr()[0], **aux, "dev_primary": mean_dev}
        record.update({f"dev_{task_key(t)}_primary": dev[t]["primary"] for t in tasks})
        loop.history.append(record)
        if log is not None:
            each = " ".join(f"{t} {dev[t]['primary']:.4f}" for t in tasks)
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} dev mean {mean_dev:.4f} ({each}) ({time.time() - t0:.0f}s)")
        if mean_dev > loop.best_score:
            with timer("checkpoint_s"):
                loop.best_state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
            loop.best_score, loop.best_epoch, loop.best_dev = mean_dev, epoch + 1, dev
            loop.bad_epochs = 0
        else:
            loop.bad_epochs += 1
        loop.epoch = epoch + 1
        stop = any([cb.on_epoch_end(epoch + 1, record, model, state) for cb in callbacks])
        if stop or (cfg.patience is not None and loop.bad_epochs >= cfg.patience):
            break
    bar.close()

    # ---- restore the best epoch; report each task's official splits (never selected on)
    with timer("checkpoint_s"):
        model.load_state_dict(loop.best_state, strict=False)
    with timer("eval_s"), amp.autocast():
        reported = {
            t: {s: evaluate(model.views[t], eval_loaders[t][s], eval_features[t][s], data[t].examples[s], get_task(t), device)
                for s in ("val", "test") if s in eval_loaders[t] and report}
            for t in tasks
        }

    def means(split: str, scores: dict[str, dict]) -> Optional[dict[str, float]]:
        have = [t for t in tasks if split in scores.get(t, {})]
        if len(have) < len(tasks):
            return None
        out = {"primary": float(np.mean([scores[t][split]["primary"] for t in tasks]))}
        out.update({f"{task_key(t)}_primary": float(scores[t][split]["primary"]) for t in tasks})
        return out

    notes = [f"{t}: {n}" for t in tasks for n in data[t].notes]  # each task's data notes, named
    per_task = {t: {"dev": dict(loop.best_dev[t]), **{s: dict(v) for s, v in reported[t].items()}} for t in tasks}
    result: RunResult = {
        "task": cfg.task,
        "tasks": {t: {**per_task[t], "primary_metric": get_task(t).primary, "train_examples": sizes[t],
                      "mixing_weight": weights[t], "examples_seen": seen[t],
                      "data": data_budget(_task_cfg(cfg, t), data[t], get_task(t))} for t in tasks},
        "method": cfg.method,
        "model": cfg.model,
        "layers": cfg.layers if cfg.layers is not None else backbone.config.num_hidden_layers,
        "seed": cfg.seed,
        "primary_metric": "mean of the tasks' primary metrics",
        "dev": means("dev", per_task),
        **{s: m for s in ("val", "test") if (m := means(s, per_task)) is not None},
        "best_epoch": loop.best_epoch,
        "epochs_run": len(loop.history),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total,
        "checkpoint_bytes": sum(t.numel() * t.element_size() for t in loop.best_state.values()),
        "train_examples": sum(sizes.values()),
        "data": {"multitask": True, "mixing": cfg.mixing, "mixing_temperature": cfg.mixing_temperature,
                 "sizes": {"train": sum(sizes.values())}, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                 "task_sizes": {t: {s: len(exs) for s, exs in data[t].examples.items()} for t in tasks},
                 "notes": notes},
        "wall_s": time.time() - t_start,
        "train_s": timer.spent["train_s"],
        "history": loop.history,
        "resumed_at": [],
        "data_notes": notes,
        "init_from": init_note,
        **provenance(cfg, resolved, config_hash, device, amp, backbone),
        "workers": 1,
        "sync_bytes_per_step": 0,
    }
    out = Path(output) if output is not None else None
    if out is not None:
        from .checkpoint import save_checkpoint
        from .fileio import write_json_atomic
        from .predictions import PREDICTIONS_DIR, write_predictions

        with timer("checkpoint_s"):
            save_checkpoint(model, cfg, out / "checkpoint")
        result["checkpoint"] = str(out / "checkpoint")
        files = {t: write_predictions(out, reported[t], data[t].examples, get_task(t), f"{PREDICTIONS_DIR}/{task_key(t)}")
                 for t in tasks}  # predictions/<task>/<split>.jsonl
        if any(files.values()):
            result["predictions_files"] = files
    result["timing"] = {**timer.record(), "train_tokens": train_tokens}
    if out is not None:
        write_json_atomic(out / "result.json", result)
    return result
