"""Train one configuration: read top to bottom.

    config -> backbone + method encoder + task head -> data -> AdamW/warmup loop
           -> evaluate dev every epoch (selection) -> restore best -> report val (never selected on)

``train()`` is what ``orchestrate run`` calls in-process and what a Ray Train worker
calls inside a trial; the worker passes ``callbacks`` to report epochs and stop early.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, MutableMapping, Optional, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import metrics as M
from . import runinfo
from .backbones import Backbone, load_backbone
from .checkpoint import load_init
from .config import RunConfig, task_names
from .distributed import Dist
from .data import encode_split, feature_length, make_loader, sort_by_length, subsample
from .errors import TrainingError
from .kernels import install as install_kernels
from .methods import get_method
from .model import TaskModel
from .precision import Amp
from .result import RunResult
from .sampling import draw
from .tasks import get_task, load_splits
from .tasks.io import passage_ids, resolve_data_dir
from .tasks.kinds import get_kind, kind_class
from .trainstate import LoopState, load_train_state, save_train_state


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: TaskModel, state: "Resumable") -> bool:
        """Called after each epoch's dev evaluation; return True to stop training.
        ``state.save(directory)`` writes what ``train(cfg, resume=directory)`` continues from."""


@dataclass
class Resumable:
    """The run's state at the end of an epoch, saved on demand (see :mod:`ptcore.trainstate`)."""

    model: TaskModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader_generator: torch.Generator
    loop: LoopState
    config_hash: str
    amp: Amp

    def save(self, directory: str | Path) -> Path:
        return save_train_state(directory, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                loader_generator=self.loader_generator, loop=self.loop, config_hash=self.config_hash,
                                amp=self.amp)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: RunConfig, backbone: Backbone) -> TaskModel:
    """Method encoder around the backbone, plus the task kind's head. Seeds first, so the
    prompts and head start the same for the same seed."""
    if len(task_names(cfg.task)) > 1:
        from .multitask import build_multitask_model

        return build_multitask_model(cfg, backbone)
    seed_everything(cfg.seed)
    spec = get_task(cfg.task)
    kind = get_kind(spec.kind)
    method = get_method(cfg.method)
    encoder = method.encoder_cls(backbone, cfg.method_args)
    head = kind.make_head(encoder.hidden_size, spec, cfg.head_dropout)
    model = TaskModel(encoder, head, kind, pooling=cfg.pooling)
    model.task_name = cfg.task  # which head this is (init_from matches a multi-task checkpoint's heads by it)
    install_kernels(model, cfg.kernels, backbone.model)
    return model


class Scores(dict):
    """A split's scores (metric name -> value, plus ``primary``), carrying the per-item metric
    inputs they were computed from (``inputs``): what a report resamples for a paired
    bootstrap; and the example index of each item (``item_examples``): what a predictions
    file keys its lines by. A plain ``dict(scores)`` drops both."""

    inputs: Optional[M.MetricInputs] = None
    item_examples: Optional[list[int]] = None


@torch.inference_mode()
def evaluate(model: TaskModel, loader, features, examples, spec, device, dist: Optional[Dist] = None) -> Scores:
    """Predict a whole split and score it with the task's official metrics (+ 'primary').

    Data-parallel (``dist`` on): ``loader`` holds this rank's contiguous part of the split's
    ``features``; the ranks' predictions are gathered in order and every rank scores them all
    (on one worker ``dist.gather`` hands the predictions back as they are).

    ``inference_mode`` rather than ``no_grad``: no autograd bookkeeping at all (version
    counters, view tracking); nothing computed here is ever used by a backward.
    """
    model.eval()
    preds: list = []
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        preds.extend(model.kind.decode(model(batch), batch))
    if dist is not None:
        preds = dist.gather(preds)
    inputs = model.kind.metric_inputs(preds, features, examples, spec)
    scores = Scores(M.score_inputs(spec.metrics, inputs))
    scores["primary"] = scores[spec.primary]
    scores.item_examples = model.kind.item_examples(features, examples)
    clusters = passage_ids([examples[i] for i in scores.item_examples], spec)  # each item's passage (None: no passages)
    scores.inputs = dataclasses.replace(inputs, clusters=clusters) if clusters is not None else inputs
    return scores


class PhaseTimer:
    """Wall time (``perf_counter``) of a run's phases, summed over the run: where did it go?

    ``with timer("eval_s"): ...`` adds to one phase; :meth:`record` puts everything not
    inside a phase (optimizer set-up, callbacks, logging, the result record) in ``other_s``.
    """

    PHASES = ("load_s", "data_s", "train_s", "eval_s", "checkpoint_s")

    def __init__(self):
        self.start = time.perf_counter()
        self.spent = dict.fromkeys(self.PHASES, 0.0)

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spent[phase] += time.perf_counter() - t0

    def record(self) -> dict[str, float]:
        total = time.perf_counter() - self.start
        return {**self.spent, "other_s": max(total - sum(self.spent.values()), 0.0)}


@dataclass
class Prepared:
    """Everything a run needs before the first step (reusable across runs of one task)."""

    examples: dict[str, list[dict]]
    features: dict[str, list[dict]]
    notes: list[str] = field(default_factory=list)
    max_length: int = 0  # the token limit every input was cut to
    truncated: dict[str, int] = field(default_factory=dict)  # split -> inputs that reached max_length


def input_limit(cfg: RunConfig, backbone: Backbone, extra_tokens: int) -> tuple[int, Optional[str]]:
    """The token limit of the input, the same for every method wherever the position table
    has room: a shallow prompt of ``extra_tokens`` extends the sequence beyond it rather than
    cutting the input. Returns (limit, a data note where the prompt does not fit)."""
    spec = get_task(cfg.task)
    table = backbone.config.max_position_embeddings - 2  # (RoBERTa's positions start at 2)
    wanted = min(cfg.max_length or spec.max_length, table)
    if wanted + extra_tokens <= table:
        return wanted, None
    limit = table - extra_tokens
    return limit, (
        f"inputs cut to {limit} tokens (not {wanted}): the {extra_tokens}-token shallow prompt "
        f"needs the rest of the {table}-position table; other methods see up to {wanted} input tokens"
    )


def prepare_data(cfg: RunConfig, backbone: Backbone, extra_tokens: int, cache_dir: Optional[str] = None) -> Prepared:
    spec = get_task(cfg.task)
    kind = get_kind(spec.kind)
    examples, notes = load_splits(spec, cfg.data_dir, max_train=cfg.max_train_examples)
    if cfg.train_size is not None:  # a stratified sample drawn with data_seed (+ the few-shot dev outside it)
        examples["train"], few_shot_dev, drawn = draw(examples["train"], cfg.train_size, cfg.data_seed, cfg.dev_size,
                                                      passage=spec.passage)  # whole passages: none in both
        if few_shot_dev is not None:
            examples["dev"] = few_shot_dev
        notes += drawn
    for split in ("dev", "val", "test"):
        cap = min(filter(None, (cfg.max_eval_examples, cfg.max_dev_examples if split == "dev" else None)), default=None)
        if split in examples and cap:
            before = len(examples[split])
            examples[split] = subsample(examples[split], cap)
            if len(examples[split]) < before:
                notes.append(f"{split} subsampled to {len(examples[split])} of {before} examples")
    limit, note = input_limit(cfg, backbone, extra_tokens)
    if note:
        notes.append(note)
    features = {
        s: encode_split(kind, spec, exs, backbone.tokenizer, limit, s, cache_dir) for s, exs in examples.items()
    }
    truncated = {}
    if kind.truncation == "cut":  # one truncated sequence per example (QA slides windows; NER keeps words)
        # a feature at the limit was (almost always) cut: the tokenizer stops exactly there
        truncated = {s: sum(feature_length(f) >= limit for f in fs) for s, fs in features.items()}
    return Prepared(examples, features, notes, limit, truncated)


def data_key(cfg: RunConfig, backbone: Backbone, extra_tokens: int, cache_dir: Optional[str]) -> tuple:
    """Everything :func:`prepare_data` reads: runs that agree on it get the same splits (and
    a shallow prompt that fits shares them with deep prompts and fine-tuning)."""
    return (cfg.task, cfg.data_dir, cfg.max_train_examples, cfg.max_eval_examples, cfg.max_dev_examples,
            cfg.train_size, cfg.data_seed if cfg.train_size is not None else None, cfg.dev_size,
            input_limit(cfg, backbone, extra_tokens), backbone.source, len(backbone.tokenizer), cache_dir)


def prepared(cfg: RunConfig, backbone: Backbone, extra_tokens: int, cache_dir: Optional[str],
             cache: Optional[MutableMapping[tuple, Prepared]] = None) -> Prepared:
    """:func:`prepare_data`, memoized in ``cache`` when one is given (runs only read it)."""
    if cache is None:
        return prepare_data(cfg, backbone, extra_tokens, cache_dir)
    key = data_key(cfg, backbone, extra_tokens, cache_dir)
    if key not in cache:
        cache[key] = prepare_data(cfg, backbone, extra_tokens, cache_dir)
    return cache[key]


def data_budget(cfg: RunConfig, data: Prepared, spec) -> dict[str, Any]:
    """What the run was given, for the report's data-budget table (JSON-serialisable)."""
    labels = list(spec.labels) if getattr(spec, "labels", None) else None
    counts = None
    if kind_class(spec.kind).has_label_set and data.examples.get("train"):
        counted = Counter(ex.get("label") for ex in data.examples["train"] if ex.get("label") is not None)
        counts = {str(k): v for k, v in sorted(counted.items())}
    return {
        "sizes": {s: len(exs) for s, exs in data.examples.items()},
        "max_length": data.max_length,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "notes": list(data.notes),
        "truncated": dict(data.truncated),
        "labels": labels,
        "train_label_counts": counts,
    }


def provenance(cfg: RunConfig, resolved: dict[str, Any], config_hash: str, device: torch.device, amp: Amp,
               backbone: Optional[Backbone] = None) -> dict[str, Any]:
    """What ran, and where: the result record's keys that a single-task and a multi-task run share."""
    attention = getattr(backbone.config, "_attn_implementation", None) if backbone is not None else None
    return {
        "config": resolved,
        "config_hash": config_hash,
        # where the data came from (config.data_dir may be null: $PTCORE_DATA_DIR, else the hub)
        "data_dir": str(resolve_data_dir(cfg.data_dir) or "hub"),
        "versions": runinfo.versions(),
        "git": runinfo.git_info(),
        "device": str(device),
        "precision": amp.precision,  # what ran (precision: auto resolves per device)
        "skipped_steps": amp.skipped,  # fp16 steps skipped on overflow
        # what decides the arithmetic: threads, kernels, device, precision, torch (ptcore.runinfo.compute)
        "compute": runinfo.compute(device, amp.precision, cfg.kernels, attention),
    }


def split_batch(batch: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """``batch`` cut into (up to) ``k`` slices along its first dimension (examples); tensors
    and per-example lists alike, padding kept (it is masked)."""
    n = int(batch["example_index"].shape[0])
    if k <= 1 or n <= 1:
        return [batch]
    bounds = [round(i * n / k) for i in range(min(k, n) + 1)]
    return [
        {key: v[a:b] if (torch.is_tensor(v) or isinstance(v, list)) and len(v) == n else v for key, v in batch.items()}
        for a, b in zip(bounds, bounds[1:])
    ]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, warmup_ratio: float, total_steps: int):
    """AdamW over the trainable parameters (no weight decay on biases and LayerNorm) with
    linear warmup then linear decay. Returns (trainable params, optimizer, scheduler).

    The fused AdamW kernel wherever torch has one (CPU and CUDA, floating-point parameters):
    the same update as the default for-loop implementation, which torch picks on the CPU and
    which spends ~10% of a MiniLM fine-tuning step there, one small op per tensor at a time
    (``tests/core/test_kernels.py`` checks the two agree).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n  # noqa: E731
    fused = bool(named) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in named)
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not no_decay(n)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
        ],
        lr=lr,
        fused=fused or None,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    return [p for _, p in named], optimizer, scheduler


def train(
    cfg: RunConfig,
    *,
    backbone: Optional[Backbone] = None,
    data: Optional[Prepared] = None,
    callbacks: tuple[Callback, ...] = (),
    output: Optional[str | Path] = None,
    progress: bool = True,
    cache_dir: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
    data_cache: Optional[MutableMapping[tuple, Prepared]] = None,
    report: bool = True,
    resume: Optional[str | Path] = None,
) -> RunResult:
    """Train ``cfg``; return the result record (:class:`ptcore.result.RunResult`; written with
    the checkpoint to ``output``).

    ``data_cache``: a mapping that keeps prepared splits between runs in one process (a
    reused trial process passes the same dict every run; see :func:`prepared`).
    ``report=False``: skip the official val/test evaluation (a search run is selected on dev
    alone, so its val/test scores would only cost time, and tempt a reader).
    ``resume``: a directory a callback saved with ``state.save`` after some epoch; the run
    goes on from the next epoch exactly as it would have without the stop.

    ``cfg.threads``: torch's intra-op threads for the run, restored after it (see
    :func:`ptcore.runinfo.run_threads`)."""
    with runinfo.run_threads(cfg.threads):
        if len(task_names(cfg.task)) > 1:  # several tasks joined by '+': shared prompts, a head per task
            from .multitask import train_multitask

            return train_multitask(cfg, backbone=backbone, callbacks=callbacks, output=output, progress=progress,
                                   cache_dir=cache_dir, log=log, data_cache=data_cache, report=report, resume=resume)
        return _train_one_task(cfg, backbone=backbone, data=data, callbacks=callbacks, output=output, progress=progress,
                               cache_dir=cache_dir, log=log, data_cache=data_cache, report=report, resume=resume)


def _train_one_task(
    cfg: RunConfig,
    *,
    backbone: Optional[Backbone],
    data: Optional[Prepared],
    callbacks: tuple[Callback, ...],
    output: Optional[str | Path],
    progress: bool,
    cache_dir: Optional[str],
    log: Optional[Callable[[str], None]],
    data_cache: Optional[MutableMapping[tuple, Prepared]],
    report: bool,
    resume: Optional[str | Path],
) -> RunResult:
    """:func:`train` of a single-task ``cfg``, inside its thread setting."""
    t_start = time.time()
    timer = PhaseTimer()
    spec = get_task(cfg.task)
    resolved = cfg.resolved()
    device = pick_device(cfg.device)
    dist = Dist.current()  # data-parallel when torch.distributed is initialized (ptcore.distributed)
    config_hash = cfg.config_hash()

    # ---- model: backbone (frozen unless fine-tuning) + method + head
    with timer("load_s"):
        backbone = backbone or load_backbone(cfg.model, cfg.layers, trust_remote_code=cfg.trust_remote_code)
        model = build_model(cfg, backbone).to(device)
        init_note = load_init(model, cfg.init_from) if cfg.init_from else None  # e.g. multi-task prompts (MPT-2)
        trainable, total = model.param_counts()

    # ---- data: official files -> examples -> token ids (dynamic padding per batch)
    with timer("data_s"):
        if data is None:
            data = prepared(cfg, backbone, model.encoder.extra_tokens, cache_dir, data_cache)
        pad_id = backbone.tokenizer.pad_token_id
        kind = model.kind
        loader_generator = torch.Generator().manual_seed(cfg.seed)  # the epochs' shuffling (saved with the state)
        train_loader = make_loader(data.features["train"], kind, pad_id, cfg.batch_size, shuffle=True, generator=loader_generator)
        eval_features = {s: sort_by_length(f) for s, f in data.features.items() if s != "train"}
        eval_loaders = {s: make_loader(dist.shard(f), kind, pad_id, cfg.eval_batch_size, shuffle=False) for s, f in eval_features.items()}

    # ---- optimizer: AdamW, no decay on biases/LayerNorm, linear warmup then linear decay
    total_steps = cfg.epochs * len(train_loader)
    params, optimizer, scheduler = make_optimizer(model, resolved["lr"], cfg.weight_decay, cfg.warmup_ratio, total_steps)

    # ---- loop state: fresh, or continued from a saved epoch boundary (weights, AdamW, schedule, RNG)
    amp = Amp(cfg.precision, device)  # autocast dtype (+ GradScaler for fp16); weights stay fp32
    loop = LoopState()
    if resume is not None:
        loop = load_train_state(resume, model=model, optimizer=optimizer, scheduler=scheduler,
                                loader_generator=loader_generator, config_hash=config_hash, amp=amp)
        loop.resumed_at.append(loop.epoch)
    state = Resumable(model, optimizer, scheduler, loader_generator, loop, config_hash, amp)
    train_tokens = torch.tensor(loop.train_tokens, dtype=torch.long)  # real (non-padding) tokens; on the CPU: no device sync
    bar = tqdm(total=total_steps, initial=loop.step, disable=not progress, desc=f"{cfg.method} {cfg.task}", unit="step", leave=False)
    stopped = cfg.patience is not None and loop.bad_epochs >= cfg.patience
    for epoch in range(loop.epoch, cfg.epochs if not stopped else loop.epoch):
        model.train()
        dist.seed_epoch(cfg.seed, epoch)  # data-parallel: each rank's dropout stream (no-op on one worker)
        t0, losses = time.time(), []
        with timer("train_s"):
            for batch in train_loader:  # a global batch of batch_size (every rank walks the same ones)
                train_tokens += batch["attention_mask"].sum()
                aux = model.encoder.on_train_step(loop.step, total_steps)  # e.g. Gumbel temperature
                optimizer.zero_grad(set_to_none=True)
                # grad_accum_steps = k on N workers: the batch's N*k slices, k per rank, one backward
                # each, weighted by what each one's loss averages over; summed over slices (and
                # ranks, all-reduced) that is the gradient of the whole batch's loss
                micro = split_batch(batch, cfg.grad_accum_steps * dist.world)
                units = [kind.loss_units(m) for m in micro] if len(micro) > 1 else [1]
                mine = dist.my_slices(list(zip(micro, units)), cfg.grad_accum_steps)
                step_loss, bad = 0.0, None
                for m, u in mine:
                    m = {k: v.to(device) if torch.is_tensor(v) else v for k, v in m.items()}
                    with amp.autocast():
                        logits = model(m)  # (B,C) / (B,) / (B,T,C) / (B,T,2) by task kind
                        loss = kind.loss(logits, m)
                    if not torch.isfinite(loss):
                        bad = loss.item()
                        break
                    if len(micro) > 1:
                        loss = loss * (u / max(sum(units), 1))
                    amp.backward(loss)
                    step_loss += loss.item()
                if dist.on:  # one all-reduce: trainable gradients + the step's loss + "a rank saw inf/NaN"
                    step_loss, any_bad = dist.all_reduce_grads(params, step_loss, bad is not None)
                    bad = bad if bad is not None else (float("nan") if any_bad else None)
                if bad is not None:
                    if amp.scaler is None:
                        raise TrainingError(
                            f"loss is {bad} at epoch {epoch + 1} step {loop.step} ({cfg.method} on {cfg.task}, lr={resolved['lr']}); "
                            f"lower the learning rate (--set lr=...) or raise warmup_ratio"
                        )
                    optimizer.zero_grad(set_to_none=True)  # fp16 overflow: skip the step, halve the scale
                    amp.skip_step()
                else:
                    amp.step(optimizer, params, cfg.max_grad_norm)  # (unscale), clip, AdamW: the same on every rank
                    losses.append(step_loss)
                scheduler.step()
                loop.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:] or [float('nan')]):.4f}", **{k: f"{v:.3g}" for k, v in aux.items()})

        # selection happens on dev only
        with timer("eval_s"), amp.autocast():
            dev = evaluate(model, eval_loaders["dev"], eval_features["dev"], data.examples["dev"], spec, device, dist)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "lr": scheduler.get_last_lr()[0], **aux}
        record.update({f"dev_{k}": v for k, v in dev.items()})
        loop.history.append(record)
        if log is not None:
            log(
                f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} dev {spec.primary} {dev['primary']:.4f} "
                f"({time.time() - t0:.0f}s)"
            )
        if dev["primary"] > loop.best_score:
            with timer("checkpoint_s"):
                loop.best_state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
            loop.best_score, loop.best_epoch, loop.best_dev = dev["primary"], epoch + 1, dev
            loop.bad_epochs = 0
        else:
            loop.bad_epochs += 1
        loop.epoch, loop.train_tokens = epoch + 1, int(train_tokens)
        stop = any([cb.on_epoch_end(epoch + 1, record, model, state) for cb in callbacks])
        if stop or (cfg.patience is not None and loop.bad_epochs >= cfg.patience):
            break
    bar.close()
    history = loop.history
    best = {"score": loop.best_score, "epoch": loop.best_epoch, "state": loop.best_state, "dev": loop.best_dev}

    # ---- restore the best epoch and report the official splits (never selected on)
    with timer("checkpoint_s"):
        model.load_state_dict(best["state"], strict=False)
    with timer("eval_s"), amp.autocast():
        reported = {
            s: evaluate(model, eval_loaders[s], eval_features[s], data.examples[s], spec, device, dist)
            for s in ("val", "test")
            if s in eval_loaders and report
        }
    result: RunResult = {
        "task": cfg.task,
        "method": cfg.method,
        "model": cfg.model,
        "layers": cfg.layers if cfg.layers is not None else backbone.config.num_hidden_layers,
        "seed": cfg.seed,
        "primary_metric": spec.primary,
        "dev": best["dev"],
        **reported,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total,
        "checkpoint_bytes": sum(t.numel() * t.element_size() for t in best["state"].values()),
        "train_examples": len(data.examples["train"]),
        "data": data_budget(cfg, data, spec),
        "wall_s": time.time() - t_start,
        "train_s": timer.spent["train_s"],  # optimizer steps only
        "history": history,
        "resumed_at": loop.resumed_at,  # epochs after which this run was continued from a saved state
        "data_notes": data.notes,
        "init_from": init_note,
        **provenance(cfg, resolved, config_hash, device, amp, backbone),
        "workers": dist.world,  # data-parallel processes (batch_size is the global batch)
        "sync_bytes_per_step": dist.sync_bytes,  # gradient bytes all-reduced per step (0 on one worker)
    }
    # the per-item metric inputs of the reported splits: a report's paired bootstrap resamples them
    predictions = {s: v.inputs.as_dict() for s, v in reported.items() if getattr(v, "inputs", None) is not None}
    if predictions:
        result["predictions"] = predictions
    out = Path(output) if output is not None and dist.main else None  # rank 0 alone writes
    if out is not None:
        from .checkpoint import save_checkpoint
        from .predictions import write_predictions

        with timer("checkpoint_s"):
            save_checkpoint(model, cfg, out / "checkpoint")
        result["checkpoint"] = str(out / "checkpoint")
        files = write_predictions(out, reported, data.examples, spec)  # predictions/<split>.jsonl
        if files:
            result["predictions_files"] = files
    # seconds per phase (train_s: the top-level key);
    # train_tokens / train_s is the training throughput in real tokens per second
    result["timing"] = {**timer.record(), "train_tokens": int(train_tokens)}
    if out is not None:
        from .fileio import write_json_atomic

        write_json_atomic(out / "result.json", result)
    return result
