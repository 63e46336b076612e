"""Train one configuration: one loop for one task or several, read top to bottom.

    config -> backbone + method encoder + a head per task (ptcore.model.build_model)
           -> data: each task's splits -> token ids; a task schedule over the training batches
           -> AdamW or Adafactor (cfg.optimizer), warmup then linear decay or constant (cfg.lr_schedule);
              each optimizer step: the schedule's (task, batch of B), cut into
              grad_accum_steps x workers slices, one backward each, one clipped step
           -> every epoch: each task's dev; select the epoch on dev (a multi-task run: the mean
              of the tasks' primary scores)
           -> restore the best epoch -> report each task's val / test (never selected on)

The **task schedule** (:class:`TaskSchedule`) is all that differs between a single-task and
a multi-task run (tasks joined by '+', ``superglue/cb+glue/sst2``): it says which task's
batch each optimizer step trains.

* :class:`OneTask`: every step the one task; an epoch is one pass over its loader.
* :class:`MixedTasks`: each step's task drawn with probability p_t (``cfg.mixing``), as in
  T5 (Raffel et al., 2020): ``proportional`` p_t ∝ n_t, the training-set sizes;
  ``temperature`` p_t ∝ n_t ** (1 / T) (T = ``mixing_temperature``; larger T evens the tasks
  out, so a small task like CB is not drowned). An epoch is ceil(sum n_t / batch_size) steps;
  each task's loader cycles through its own length-grouped shuffles. A batch holds one task's
  examples, so each head sees only its own task and the shared encoder sees every task.

Everything else is the same code for both: gradient accumulation, data-parallel workers
(:mod:`ptcore.distributed`), precision (:mod:`ptcore.precision`), the inf/NaN rule, early
stopping, exact resume from an epoch boundary (:mod:`ptcore.trainstate`), the result record
(:mod:`ptcore.result`; a multi-task run adds each task's scores under ``tasks``, and its
``dev`` / ``val`` are their means) and the files written with it.

``train()`` is what ``orchestrate run`` calls in-process and what a Ray Train worker
calls inside a trial; the worker passes ``callbacks`` to report epochs and stop early.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, MutableMapping, Optional, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup
from transformers.optimization import Adafactor

from . import metrics as M
from . import runinfo
from .backbones import Backbone, load_backbone
from .checkpoint import load_init, save_checkpoint
from .config import RunConfig, task_key, task_names
from .data import encode_split, feature_length, make_loader, sort_by_length, subsample
from .distributed import Dist
from .errors import ConfigError, TrainingError
from .fileio import write_json_atomic
from .model import MultiTaskModel, TaskModel, build_model, check_run, run_kind
from .precision import Amp
from .predictions import PREDICTIONS_DIR, write_predictions
from .result import RunResult
from .sampling import draw
from .tasks import get_task, load_splits
from .tasks.io import passage_ids, resolve_data_dir
from .tasks.kinds import kind_class
from .tasks.text_kinds import TextKind
from .trainstate import LoopState, load_train_state, save_train_state

Model = TaskModel | MultiTaskModel  # build_model's: one task, or a head per task


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: Model, state: "Resumable") -> bool:
        """Called after each epoch's dev evaluation; return True to stop training.
        ``state.save(directory)`` writes what ``train(cfg, resume=directory)`` continues from."""


@dataclass
class Resumable:
    """The run's state at the end of an epoch, saved on demand (see :mod:`ptcore.trainstate`)."""

    model: Model
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule: "TaskSchedule"
    loop: LoopState
    config_hash: str
    amp: Amp

    def save(self, directory: str | Path) -> Path:
        return save_train_state(directory, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                schedule=self.schedule, loop=self.loop, config_hash=self.config_hash, amp=self.amp)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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



# ====================================================================== data


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
    positions = getattr(backbone.config, "max_position_embeddings", None)
    if positions is None:  # T5: relative positions, no table to fill
        return cfg.max_length or spec.max_length, None
    table = positions - 2  # (RoBERTa's positions start at 2)
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
    kind = run_kind(cfg, cfg.task, backbone)  # the task's own kind, or its text kind (format text)
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
    if isinstance(kind, TextKind):
        notes.append(kind.note())
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
            input_limit(cfg, backbone, extra_tokens), backbone.source, len(backbone.tokenizer), cache_dir,
            getattr(run_kind(cfg, cfg.task, backbone), "cache_tag", None))


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
    """``batch`` cut into (up to) ``k`` slices along its first dimension (examples), none
    empty (a batch of fewer than ``k`` examples: one slice each); tensors and per-example
    lists alike, padding kept (it is masked)."""
    n = int(batch["example_index"].shape[0])
    if k <= 1 or n <= 1:
        return [batch]
    k = min(k, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    # a text kind's targets (ptcore.tasks.text_kinds): m rows, each example's `per` of them in a
    # run (rank classification: one per label; generation: one), `rows` the source of each on T5
    # (re-based to its slice); a decoder LM's joined rows are its input_ids
    m = len(batch["rows"]) if "rows" in batch else len(batch["input_ids"]) if "target_mask" in batch else n
    per = m // n if m % n == 0 else 1

    def cut(key: str, v: Any, a: int, b: int) -> Any:
        if not (torch.is_tensor(v) or isinstance(v, list)):
            return v
        if key == "rows":
            return v[a * per:b * per] - a
        if len(v) == n:
            return v[a:b]
        return v[a * per:b * per] if per > 1 and len(v) == m else v

    return [{key: cut(key, v, a, b) for key, v in batch.items()} for a, b in zip(bounds, bounds[1:])]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, warmup_ratio: float, total_steps: int, *,
                   optimizer: str = "adamw", lr_schedule: str = "linear", warmup_steps: Optional[int] = None):
    """The optimizer over the trainable parameters (no weight decay on biases and LayerNorm)
    and its schedule. Returns (trainable params, optimizer, scheduler).

    * ``optimizer="adamw"`` (default): torch's AdamW, the fused kernel wherever torch has one
      (CPU and CUDA, floating-point parameters): the same update as the default for-loop
      implementation, which torch picks on the CPU and which spends ~10% of a MiniLM
      fine-tuning step there, one small op per tensor at a time (``tests/core/test_kernels.py``
      checks the two agree).
    * ``optimizer="adafactor"``: transformers' Adafactor with a fixed learning rate
      (``relative_step=False, scale_parameter=False, warmup_init=False``), as T5 prompt tuning
      (Lester et al., 2021) and the DP reference use it; the same two parameter groups.

    Warmup: ``warmup_steps`` optimizer steps where given, else ``int(warmup_ratio * total_steps)``;
    the lr of step k (0-based) rises as k / warmup (transformers' schedules: step 0 at lr 0).
    Then ``lr_schedule="linear"`` decays linearly to 0 at ``total_steps``, ``"constant"`` keeps
    the peak ``lr``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n  # noqa: E731
    groups = [
        {"params": [p for n, p in named if not no_decay(n)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0},
    ]
    if optimizer == "adamw":
        fused = bool(named) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in named)
        opt = torch.optim.AdamW(groups, lr=lr, fused=fused or None)
    elif optimizer == "adafactor":
        opt = Adafactor(groups, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False)
    else:
        raise ConfigError(f"optimizer {optimizer!r}: expected 'adamw' or 'adafactor'")
    warmup = warmup_steps if warmup_steps is not None else int(warmup_ratio * total_steps)
    if lr_schedule == "linear":
        scheduler = get_linear_schedule_with_warmup(opt, warmup, total_steps)
    elif lr_schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(opt, warmup)
    else:
        raise ConfigError(f"lr_schedule {lr_schedule!r}: expected 'linear' or 'constant'")
    return [p for _, p in named], opt, scheduler


# ====================================================================== task schedules

Batch = dict[str, Any]  # one task's collated examples: input_ids (B,T) (multiple choice (B,C,T)), labels, ...


class TaskSchedule(abc.ABC):
    """Which task's batch each optimizer step trains: :meth:`epoch` yields one ``(task,
    batch)`` per step, ``steps_per_epoch`` of them. Data-parallel workers build the same
    schedule from the same seeds, so every rank walks the same global batches.

    A schedule owns the random streams that order the training data (saved with the run's
    state, :meth:`state_dict`, so a resumed run draws what the uninterrupted one would), and
    counts the training examples it handed out per task (``seen``)."""

    tasks: list[str]
    weights: dict[str, float]  # p_t: the share of steps that draw each task
    steps_per_epoch: int
    seen: dict[str, int]  # training examples drawn per task, all epochs (the mixture actually trained on)

    @abc.abstractmethod
    def epoch(self) -> Iterator[tuple[str, Batch]]:
        """This epoch's steps: the task, and its next global batch of up to ``batch_size`` examples."""

    @abc.abstractmethod
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(generator states and positions as tensors, the rest as JSON) at an epoch boundary."""

    @abc.abstractmethod
    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Back to a saved boundary; may draw from torch's global generator (restored after it)."""

    def _count(self, task: str, batch: Batch) -> None:
        self.seen[task] += int(batch["example_index"].shape[0])


class OneTask(TaskSchedule):
    """A single-task run: every step the one task; an epoch is one pass over its loader, a new
    length-grouped shuffle each epoch, drawn from ``generator``."""

    def __init__(self, task: str, loader, generator: torch.Generator):
        self.tasks, self.loader, self.generator = [task], loader, generator
        self.weights = {task: 1.0}
        self.steps_per_epoch = len(loader)
        self.seen = {task: 0}

    def epoch(self) -> Iterator[tuple[str, Batch]]:
        for batch in self.loader:  # the epoch's shuffle is drawn here
            self._count(self.tasks[0], batch)
            yield self.tasks[0], batch

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"loader": self.generator.get_state()}, {"seen": dict(self.seen)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.generator.set_state(tensors["loader"])
        self.seen.update(meta.get("seen", {}))


def mixing_weights(sizes: dict[str, int], mixing: str, temperature: float) -> dict[str, float]:
    """p_t of each task (sums to 1): n_t, or n_t ** (1 / temperature), normalized."""
    power = 1.0 if mixing == "proportional" else 1.0 / temperature
    raw = {t: float(n) ** power for t, n in sizes.items()}
    total = sum(raw.values())
    return {t: r / total for t, r in raw.items()}


def draw_tasks(weights: dict[str, float], steps: int, generator: torch.Generator) -> list[str]:
    """The task of each of an epoch's ``steps``, drawn i.i.d. from ``weights`` (seeded; one draw
    for the whole epoch)."""
    tasks = list(weights)
    p = torch.tensor([weights[t] for t in tasks], dtype=torch.float64)
    return [tasks[i] for i in torch.multinomial(p, steps, replacement=True, generator=generator).tolist()]


class Cycle:
    """Endless batches of one task: a new length-grouped shuffle (drawn from ``generator``)
    each time its loader runs out. Remembers where it is in the current shuffle (the
    generator's state before it, and the batches taken since), so a saved run can put it back."""

    def __init__(self, loader, generator: torch.Generator, task: str):
        self.loader, self.generator, self.task = loader, generator, task
        self._new_pass()

    def _new_pass(self) -> None:
        self.pass_state = self.generator.get_state()
        self.it, self.taken = iter(self.loader), 0  # the shuffle is drawn here

    def next(self) -> Batch:
        try:
            batch = next(self.it)
        except StopIteration:
            self._new_pass()
            batch = next(self.it)
        self.taken += 1
        return batch

    def restore(self, pass_state: torch.Tensor, taken: int, state: torch.Tensor) -> None:
        self.generator.set_state(pass_state)
        with torch.random.fork_rng(devices=[]):  # the DataLoader iterator takes a seed from torch's generator
            self._new_pass()
            for _ in range(taken):
                next(self.it)
        self.taken = taken
        self.generator.set_state(state)


class MixedTasks(TaskSchedule):
    """A multi-task run: each step's task drawn from ``weights`` (:func:`mixing_weights`) with
    ``generator``, that task's next batch from its :class:`Cycle`."""

    def __init__(self, loaders: dict[str, Any], generators: dict[str, torch.Generator], weights: dict[str, float],
                 steps_per_epoch: int, generator: torch.Generator):
        self.tasks, self.weights, self.steps_per_epoch, self.generator = list(loaders), weights, steps_per_epoch, generator
        self.cycles = {t: Cycle(loaders[t], generators[t], t) for t in self.tasks}
        self.seen = dict.fromkeys(self.tasks, 0)

    def epoch(self) -> Iterator[tuple[str, Batch]]:
        for task in draw_tasks(self.weights, self.steps_per_epoch, self.generator):
            batch = self.cycles[task].next()
            self._count(task, batch)
            yield task, batch

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {"schedule": self.generator.get_state()}
        for t, c in self.cycles.items():
            tensors[f"loader.{task_key(t)}"] = c.generator.get_state()
            tensors[f"pass.{task_key(t)}"] = c.pass_state
        return tensors, {"taken": {t: c.taken for t, c in self.cycles.items()}, "seen": dict(self.seen)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.generator.set_state(tensors["schedule"])
        for t, c in self.cycles.items():
            c.restore(tensors[f"pass.{task_key(t)}"], int(meta["taken"][t]), tensors[f"loader.{task_key(t)}"])
        self.seen.update(meta.get("seen", {}))


def make_schedule(cfg: RunConfig, model: Model, train_features: dict[str, list[dict]], pad_id: int) -> TaskSchedule:
    """The run's schedule over its tasks' training features (seeded from ``cfg.seed``)."""
    tasks = list(train_features)
    if len(tasks) == 1:
        generator = torch.Generator().manual_seed(cfg.seed)  # the epochs' shuffling (saved with the state)
        loader = make_loader(train_features[tasks[0]], model.view(tasks[0]).kind, pad_id, cfg.batch_size, shuffle=True,
                             generator=generator)
        return OneTask(tasks[0], loader, generator)
    generators = {t: torch.Generator().manual_seed(cfg.seed + 1 + i) for i, t in enumerate(tasks)}  # each task's shuffles
    loaders = {t: make_loader(train_features[t], model.view(t).kind, pad_id, cfg.batch_size, shuffle=True, generator=generators[t])
               for t in tasks}
    sizes = {t: len(f) for t, f in train_features.items()}
    return MixedTasks(loaders, generators, mixing_weights(sizes, cfg.mixing, cfg.mixing_temperature),
                      steps_per_epoch=math.ceil(sum(sizes.values()) / cfg.batch_size),
                      generator=torch.Generator().manual_seed(cfg.seed))  # which task each step trains


# ====================================================================== the loop


def train(
    cfg: RunConfig,
    *,
    backbone: Optional[Backbone] = None,
    data: Optional[Prepared | Mapping[str, Prepared]] = None,
    callbacks: tuple[Callback, ...] = (),
    output: Optional[str | Path] = None,
    progress: bool = True,
    cache_dir: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
    data_cache: Optional[MutableMapping[tuple, Prepared]] = None,
    report: bool = True,
    resume: Optional[str | Path] = None,
) -> RunResult:
    """Train ``cfg`` (one task, or several joined by '+'); return the result record
    (:class:`ptcore.result.RunResult`; written with the checkpoint to ``output``).

    ``data``: prepared splits (:func:`prepare_data`) to train on instead of preparing them; a
    multi-task run takes a mapping task -> :class:`Prepared`.
    ``data_cache``: a mapping that keeps prepared splits between runs in one process (a
    reused trial process passes the same dict every run; see :func:`prepared`).
    ``report=False``: skip the official val/test evaluation (a search run is selected on dev
    alone, so its val/test scores would only cost time, and tempt a reader).
    ``resume``: a directory a callback saved with ``state.save`` after some epoch; the run
    goes on from the next epoch exactly as it would have without the stop.

    ``cfg.threads``: torch's intra-op threads for the run, restored after it (see
    :func:`ptcore.runinfo.run_threads`)."""
    with runinfo.run_threads(cfg.threads):
        return _train(cfg, backbone=backbone, data=data, callbacks=callbacks, output=output, progress=progress,
                      cache_dir=cache_dir, log=log, data_cache=data_cache, report=report, resume=resume)


def _train(
    cfg: RunConfig,
    *,
    backbone: Optional[Backbone],
    data: Optional[Prepared | Mapping[str, Prepared]],
    callbacks: tuple[Callback, ...],
    output: Optional[str | Path],
    progress: bool,
    cache_dir: Optional[str],
    log: Optional[Callable[[str], None]],
    data_cache: Optional[MutableMapping[tuple, Prepared]],
    report: bool,
    resume: Optional[str | Path],
) -> RunResult:
    """:func:`train`, inside its thread setting."""
    t_start = time.time()
    timer = PhaseTimer()
    tasks = task_names(cfg.task)  # one task, or several joined by '+'
    multi = len(tasks) > 1
    specs = {t: get_task(t) for t in tasks}
    resolved = cfg.resolved()
    device = pick_device(cfg.device)
    dist = Dist.current()  # data-parallel when torch.distributed is initialized (ptcore.distributed)
    config_hash = cfg.config_hash()

    # ---- model: backbone (frozen unless fine-tuning) + method encoder + a head per task
    with timer("load_s"):
        if backbone is not None:
            check_run(cfg, backbone.config)
        backbone = backbone or load_backbone(cfg.model, cfg.layers, trust_remote_code=cfg.trust_remote_code,
                                             check=lambda config: check_run(cfg, config))
        model = build_model(cfg, backbone).to(device)
        init_note = load_init(model, cfg.init_from) if cfg.init_from else None  # e.g. multi-task prompts (MPT-2)
        trainable, total = model.param_counts()

    # ---- data: official files -> examples -> token ids (dynamic padding per batch); each task's
    # splits prepared exactly as a single-task run of it would prepare them
    with timer("data_s"):
        given = data if isinstance(data, Mapping) else ({tasks[0]: data} if data is not None else {})
        if data is not None and set(given) != set(tasks):
            raise ConfigError(f"train(data=...): prepared splits for {sorted(given)}, but the run trains {tasks}")
        data = {t: given[t] if t in given else prepared(task_config(cfg, t), backbone, model.encoder.extra_tokens, cache_dir,
                                                        data_cache) for t in tasks}
        pad_id = backbone.tokenizer.pad_token_id
        schedule = make_schedule(cfg, model, {t: data[t].features["train"] for t in tasks}, pad_id)
        eval_features = {t: {s: sort_by_length(f) for s, f in data[t].features.items() if s != "train"} for t in tasks}
        eval_loaders = {t: {s: make_loader(dist.shard(f), model.view(t).kind, pad_id, cfg.eval_batch_size, shuffle=False)
                            for s, f in eval_features[t].items()} for t in tasks}

    # ---- optimizer: AdamW (default) or Adafactor (cfg.optimizer) over every trainable tensor (the
    # encoder's, every head's), no decay on biases/LayerNorm; warmup (warmup_steps, else
    # warmup_ratio of the steps), then linear decay to 0 or the constant peak (cfg.lr_schedule)
    total_steps = cfg.epochs * schedule.steps_per_epoch
    params, optimizer, scheduler = make_optimizer(model, resolved["lr"], cfg.weight_decay, cfg.warmup_ratio, total_steps,
                                                  optimizer=cfg.optimizer, lr_schedule=cfg.lr_schedule,
                                                  warmup_steps=cfg.warmup_steps)
    # what a step on each task's batch trains: the shared encoder's tensors and that task's head.
    # Data-parallel ranks sum these gradients alone: another task's head keeps no gradient (not
    # a zero one, which AdamW's momentum and weight decay would still move it by)
    own = {t: {id(p) for p in model.view(t).parameters()} for t in tasks}
    step_params = {t: [p for p in params if id(p) in own[t]] for t in tasks}

    # ---- loop state: fresh, or continued from a saved epoch boundary (weights, optimizer, schedule, RNG)
    amp = Amp(cfg.precision, device)  # autocast dtype (+ GradScaler for fp16); weights stay fp32
    loop = LoopState()
    if resume is not None:
        loop = load_train_state(resume, model=model, optimizer=optimizer, scheduler=scheduler, schedule=schedule,
                                config_hash=config_hash, amp=amp)
        loop.resumed_at.append(loop.epoch)
    state = Resumable(model, optimizer, scheduler, schedule, loop, config_hash, amp)
    train_tokens = torch.tensor(loop.train_tokens, dtype=torch.long)  # real (non-padding) tokens; on the CPU: no device sync
    bar = tqdm(total=total_steps, initial=loop.step, disable=not progress, desc=f"{cfg.method} {cfg.task}", unit="step", leave=False)
    stopped = cfg.patience is not None and loop.bad_epochs >= cfg.patience
    for epoch in range(loop.epoch, cfg.epochs if not stopped else loop.epoch):
        model.train()
        dist.seed_epoch(cfg.seed, epoch)  # data-parallel: each rank's dropout stream (no-op on one worker)
        t0, losses = time.time(), []
        with timer("train_s"):
            for task, batch in schedule.epoch():  # a global batch of batch_size of one task (every rank walks the same)
                view = model.view(task)  # the shared encoder + this task's head
                train_tokens += batch["attention_mask"].sum()
                aux = model.encoder.on_train_step(loop.step, total_steps)  # e.g. Gumbel temperature
                optimizer.zero_grad(set_to_none=True)
                # grad_accum_steps = k on N workers: the batch's N*k slices, k per rank, one backward
                # each, weighted by what each one's loss averages over; summed over slices (and
                # ranks, all-reduced) that is the gradient of the whole batch's loss
                micro = split_batch(batch, cfg.grad_accum_steps * dist.world)
                units = [view.kind.loss_units(m) for m in micro] if len(micro) > 1 else [1]
                mine = dist.my_slices(list(zip(micro, units)), cfg.grad_accum_steps)
                step_loss, bad = 0.0, None
                for m, u in mine:
                    m = {k: v.to(device) if torch.is_tensor(v) else v for k, v in m.items()}
                    with amp.autocast():
                        logits = view(m)  # (b,C) / (b,) / (b,T,C) / (b,T,2) by task kind, b = this slice's examples
                        loss = view.kind.loss(logits, m)  # () a mean over the slice's loss units
                    if not torch.isfinite(loss):
                        bad = loss.item()
                        break
                    if len(micro) > 1:
                        loss = loss * (u / max(sum(units), 1))
                    amp.backward(loss)
                    step_loss += loss.item()
                if dist.on:  # one all-reduce: trainable gradients + the step's loss + "a rank saw inf/NaN"
                    step_loss, any_bad = dist.all_reduce_grads(step_params[task], step_loss, bad is not None)
                    bad = bad if bad is not None else (float("nan") if any_bad else None)
                if bad is not None:
                    if amp.scaler is None:
                        where = f"{task} in {cfg.task}" if multi else cfg.task
                        raise TrainingError(
                            f"loss is {bad} at epoch {epoch + 1} step {loop.step} ({cfg.method} on {where}, lr={resolved['lr']}); "
                            f"lower the learning rate (--set lr=...) or raise warmup_ratio"
                        )
                    optimizer.zero_grad(set_to_none=True)  # fp16 overflow: skip the step, halve the scale
                    amp.skip_step()
                else:
                    amp.step(optimizer, params, cfg.max_grad_norm)  # (unscale), clip, step: the same on every rank
                    losses.append(step_loss)
                scheduler.step()
                loop.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:] or [float('nan')]):.4f}", **{k: f"{v:.3g}" for k, v in aux.items()})

        # selection happens on dev only (several tasks: on the mean of their primary scores)
        with timer("eval_s"), amp.autocast():
            dev = {t: evaluate(model.view(t), eval_loaders[t]["dev"], eval_features[t]["dev"], data[t].examples["dev"], specs[t],
                               device, dist) for t in tasks}
        score, dev_metrics = selection(dev)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "lr": scheduler.get_last_lr()[0], **aux, **dev_metrics}
        loop.history.append(record)
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} {dev_line(dev, specs)} ({time.time() - t0:.0f}s)")
        if score > loop.best_score:
            with timer("checkpoint_s"):
                loop.best_state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
            loop.best_score, loop.best_epoch, loop.best_dev = score, epoch + 1, dev
            loop.bad_epochs = 0
        else:
            loop.bad_epochs += 1
        loop.epoch, loop.train_tokens = epoch + 1, int(train_tokens)
        stop = any([cb.on_epoch_end(epoch + 1, record, model, state) for cb in callbacks])
        if stop or (cfg.patience is not None and loop.bad_epochs >= cfg.patience):
            break
    bar.close()

    # ---- restore the best epoch and report each task's official splits (never selected on)
    with timer("checkpoint_s"):
        model.load_state_dict(loop.best_state, strict=False)
    with timer("eval_s"), amp.autocast():
        reported = {
            t: {s: evaluate(model.view(t), eval_loaders[t][s], eval_features[t][s], data[t].examples[s], specs[t], device, dist)
                for s in ("val", "test") if s in eval_loaders[t] and report}
            for t in tasks
        }
    budget = run_data(cfg, data, schedule)
    result: RunResult = {
        "task": cfg.task,
        **({"tasks": task_records(cfg, loop.best_dev, reported, data, schedule)} if multi else {}),
        "method": cfg.method,
        "model": cfg.model,
        "layers": cfg.layers if cfg.layers is not None else backbone.config.num_hidden_layers,
        "seed": cfg.seed,
        **run_scores(loop.best_dev, reported, specs),  # primary_metric, dev, val, test
        "best_epoch": loop.best_epoch,
        "epochs_run": len(loop.history),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total,
        "checkpoint_bytes": sum(t.numel() * t.element_size() for t in loop.best_state.values()),
        "train_examples": budget["train_examples"],
        "data": budget["data"],  # what the run was given (a multi-task run: each task's sizes, the mixing)
        "wall_s": time.time() - t_start,
        "train_s": timer.spent["train_s"],  # optimizer steps only
        "history": loop.history,
        "resumed_at": loop.resumed_at,  # epochs after which this run was continued from a saved state
        "data_notes": budget["data_notes"],
        "init_from": init_note,
        **provenance(cfg, resolved, config_hash, device, amp, backbone),
        "workers": dist.world,  # data-parallel processes (batch_size is the global batch)
        "sync_bytes_per_step": dist.sync_bytes,  # gradient bytes all-reduced per step (0 on one worker)
    }
    # the per-item metric inputs of the reported splits: a report's paired bootstrap resamples them
    predictions = {t: {s: v.inputs.as_dict() for s, v in reported[t].items() if getattr(v, "inputs", None) is not None}
                   for t in tasks}
    predictions = {t: p for t, p in predictions.items() if p}
    if predictions:
        result["predictions"] = predictions if multi else predictions[tasks[0]]  # multi-task: task -> split -> inputs
    out = Path(output) if output is not None and dist.main else None  # rank 0 alone writes
    if out is not None:
        with timer("checkpoint_s"):
            save_checkpoint(model, cfg, out / "checkpoint")
        result["checkpoint"] = str(out / "checkpoint")
        files = {t: write_predictions(out, reported[t], data[t].examples, specs[t], predictions_dir(t) if multi else PREDICTIONS_DIR)
                 for t in tasks}  # predictions/<split>.jsonl; multi-task: predictions/<task>/<split>.jsonl
        if any(files.values()):
            result["predictions_files"] = files if multi else files[tasks[0]]
    # seconds per phase (train_s: the top-level key);
    # train_tokens / train_s is the training throughput in real tokens per second
    result["timing"] = {**timer.record(), "train_tokens": int(train_tokens)}
    if out is not None:
        write_json_atomic(out / "result.json", result)
    return result


# ====================================================================== what an epoch and a run report


def task_config(cfg: RunConfig, task: str) -> RunConfig:
    """The run's settings for one of its tasks (what a single-task run of it would use)."""
    return cfg if cfg.task == task else cfg.model_copy(update={"task": task})


def predictions_dir(task: str) -> str:
    return f"{PREDICTIONS_DIR}/{task_key(task)}"


def selection(dev: dict[str, "Scores"]) -> tuple[float, dict[str, float]]:
    """(the score an epoch is selected on, the epoch record's dev_* metrics) from each task's
    dev scores: one task's primary and all its metrics; several tasks' mean primary
    (``dev_primary``) and each one's (``dev_<task>_primary``)."""
    if len(dev) == 1:
        (scores,) = dev.values()
        return scores["primary"], {f"dev_{k}": v for k, v in scores.items()}
    mean = float(np.mean([s["primary"] for s in dev.values()]))
    return mean, {"dev_primary": mean, **{f"dev_{task_key(t)}_primary": s["primary"] for t, s in dev.items()}}


def dev_line(dev: dict[str, "Scores"], specs: dict[str, Any]) -> str:
    if len(dev) == 1:
        ((t, scores),) = dev.items()
        return f"dev {specs[t].primary} {scores['primary']:.4f}"
    each = " ".join(f"{t} {s['primary']:.4f}" for t, s in dev.items())
    return f"dev mean {np.mean([s['primary'] for s in dev.values()]):.4f} ({each})"


def run_scores(best_dev: dict[str, Any], reported: dict[str, dict[str, Any]], specs: dict[str, Any]) -> dict[str, Any]:
    """The record's primary_metric and dev / val / test: one task's scores, or the means of
    several tasks' primary scores (with each one's as ``<task>_primary``; a split only where
    every task has it)."""
    tasks = list(specs)
    if len(tasks) == 1:
        return {"primary_metric": specs[tasks[0]].primary, "dev": best_dev[tasks[0]], **reported[tasks[0]]}
    per_task = {t: {"dev": best_dev[t], **reported[t]} for t in tasks}

    def means(split: str) -> Optional[dict[str, float]]:
        if any(split not in per_task[t] for t in tasks):
            return None
        out = {"primary": float(np.mean([per_task[t][split]["primary"] for t in tasks]))}
        out.update({f"{task_key(t)}_primary": float(per_task[t][split]["primary"]) for t in tasks})
        return out

    return {"primary_metric": "mean of the tasks' primary metrics", "dev": means("dev"),
            **{s: m for s in ("val", "test") if (m := means(s)) is not None}}


def task_records(cfg: RunConfig, best_dev: dict[str, Any], reported: dict[str, dict[str, Any]], data: dict[str, Prepared],
                 schedule: TaskSchedule) -> dict[str, Any]:
    """A multi-task record's ``tasks``: each task's scores, mixing weight, examples seen and data budget."""
    return {
        t: {"dev": dict(best_dev[t]), **{s: dict(v) for s, v in reported[t].items()}, "primary_metric": get_task(t).primary,
            "train_examples": len(data[t].features["train"]), "mixing_weight": schedule.weights[t],
            "examples_seen": schedule.seen[t], "data": data_budget(task_config(cfg, t), data[t], get_task(t))}
        for t in schedule.tasks
    }


def run_data(cfg: RunConfig, data: dict[str, Prepared], schedule: TaskSchedule) -> dict[str, Any]:
    """The record's train_examples, data (budget) and data_notes (a multi-task run's: each task's, named)."""
    tasks = list(data)
    if len(tasks) == 1:
        d = data[tasks[0]]
        return {"train_examples": len(d.examples["train"]), "data": data_budget(cfg, d, get_task(tasks[0])),
                "data_notes": d.notes}
    sizes = {t: len(data[t].features["train"]) for t in tasks}
    notes = [f"{t}: {n}" for t in tasks for n in data[t].notes]
    return {
        "train_examples": sum(sizes.values()),
        "data": {"multitask": True, "mixing": cfg.mixing, "mixing_temperature": cfg.mixing_temperature,
                 "sizes": {"train": sum(sizes.values())}, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                 "task_sizes": {t: {s: len(exs) for s, exs in data[t].examples.items()} for t in tasks},
                 "notes": notes},
        "data_notes": notes,
    }
