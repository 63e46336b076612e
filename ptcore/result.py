"""The record a run returns (and writes as ``result.json``): every key, typed and explained.

A ``TypedDict``, so the record stays the plain JSON mapping every reader already takes (the
orchestrator's ledger, ``orchestrate collect``, a report) while a type checker and a reader
of this file know each key. :func:`ptcore.train.train` returns one; a multi-task run (tasks
joined by '+') adds ``tasks``, and keys ``predictions`` and ``predictions_files`` by task.
"""

from __future__ import annotations

from typing import Any, Optional, TypedDict


class Timing(TypedDict):
    """Wall seconds per phase of the run (they add up to its wall time) and its real tokens."""

    load_s: float  # backbone + method + head
    data_s: float  # reading, sampling, tokenizing (or the feature cache)
    train_s: float  # optimizer steps only
    eval_s: float  # dev every epoch, then the reported splits
    checkpoint_s: float  # best-epoch copies, the restore, the checkpoint written
    other_s: float  # the rest (optimizer set-up, callbacks, the record)
    train_tokens: int  # real (non-padding) tokens the steps saw


class Compute(TypedDict):
    """What decides the arithmetic of a run besides its config (:func:`ptcore.runinfo.compute`):
    the same config with the same compute block repeats a run's numbers."""

    torch_threads: int  # torch.get_num_threads() during the run (the run setting ``threads``, else torch's default)
    interop_threads: int  # torch.get_num_interop_threads()
    kernels: str  # the run setting: fast / reference (ptcore.kernels)
    attention: Optional[str]  # the backbone's attention implementation as it ran (ptcore / sdpa / eager)
    device: str  # cpu, cuda:0, ...
    gpu: Optional[str]  # the GPU's name (None on the CPU)
    precision: str  # what ran: fp32 / bf16 / fp16
    torch: str  # torch.__version__ (its build: +cpu, +cu128)
    cpu_capability: Optional[str]  # the vector instruction set torch's CPU kernels use (AVX2, AVX512)
    matmul_precision: str  # torch.get_float32_matmul_precision() (highest = no TF32)


class TaskScores(TypedDict, total=False):
    """One task of a multi-task run."""

    dev: dict[str, float]
    val: dict[str, float]
    test: dict[str, float]
    primary_metric: str
    train_examples: int
    mixing_weight: float  # p_t: the share of steps that drew this task
    examples_seen: int  # training examples of this task the run took, all epochs
    data: dict[str, Any]  # its data budget (as the record's ``data``)


class RunResult(TypedDict, total=False):
    # what ran
    task: str  # one task, or several joined by '+'
    method: str
    model: str  # hub id or local directory
    layers: int  # backbone layers kept
    seed: int
    config: dict[str, Any]  # the resolved RunConfig: every default filled in (method options under method_args)
    config_hash: str  # RunConfig.config_hash(): equal configs, equal hashes
    data_dir: str  # where the data came from (a directory, or "hub")
    init_from: Optional[str]  # what a run started from (init_from), or None
    # scores: metric name -> value, plus "primary"; dev is the selected epoch's
    primary_metric: str
    dev: dict[str, float]
    val: dict[str, float]  # the official validation split, never selected on
    test: dict[str, float]  # an official labelled test split, where the task has one
    tasks: dict[str, TaskScores]  # multi-task runs: each task (dev / val are then their means)
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]]  # one record per epoch: train_loss, lr (where the schedule was), dev_*
    resumed_at: list[int]  # epochs after which the run was continued from a saved state
    # size
    trainable_params: int
    total_params: int
    trainable_pct: float
    checkpoint_bytes: int  # bytes of the trainable tensors a checkpoint stores
    # data
    train_examples: int
    data: dict[str, Any]  # the data budget: split sizes, notes, max_length, epochs, batch size, truncation, label counts
    data_notes: list[str]  # how each split was made (carves, samples, caps)
    # time and machine
    wall_s: float
    train_s: float  # optimizer steps only
    timing: Timing
    device: str
    workers: int  # data-parallel processes (batch_size is the global batch)
    sync_bytes_per_step: int  # gradient bytes all-reduced per step (0 on one worker)
    precision: str  # what ran: fp32 / bf16 / fp16
    skipped_steps: int  # fp16 steps skipped on overflow
    compute: Compute  # threads, kernels, device, precision: what decides the arithmetic
    versions: dict[str, str]  # package versions
    git: dict[str, Any]  # commit and dirty flag of the code that ran
    # outputs (with output=DIR)
    checkpoint: str  # DIR/checkpoint: trainable weights (safetensors) + the run config
    # the reported splits' per-item metric inputs (what a report resamples): split -> {"predictions",
    # "references", "groups"} plus "clusters" (each item's passage) where the task has passages
    # (multi-task: task -> split -> the same)
    predictions: dict[str, Any]
    predictions_files: dict[str, Any]  # split -> DIR-relative predictions/<split>.jsonl (multi-task: task -> split -> path)
