"""The training side of one trial: the per-run loop of a trial's process, and resume.

What runs where a trial trains (a Ray Train worker, or, for single-worker CPU trials, the reused
Tune trial process itself): every ptcore run of the trial in turn (:func:`_train_one`), each
epoch reported with a checkpoint of the trainable weights (:class:`ReportEpochs`), a retried
process picking up after the last reported epoch (:func:`resume_point`), and what a long-lived
process keeps between runs (:data:`PROCESS_CACHE`). The Tune trainable that starts this loop is
:mod:`orchestrator.execution.trial`.

Reports leave through a *channel* (:func:`channel`): in a Ray Train worker group Ray Train's
public session API (``ray.train.report`` / ``get_checkpoint`` / ``get_context``); in local mode
the channel the trial installed (:func:`local_channel`), see :mod:`orchestrator.execution.trial`
and :mod:`orchestrator.execution.ray_compat`. Only public Ray API here, and nothing heavy at
import time: ``orchestrate --help`` imports this module through the trial's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol

from orchestrator.common import failpoints
from ptcore.config import make_run_config
from ptcore.fileio import write_json_atomic

KEEP = "keep_score"  # checkpoint retention: best epoch + every run's final checkpoint
FINAL_KEEP = 1e9
POSITION = "position.json"  # in a reported checkpoint: which run and epoch it ends, and the report itself
CHECKPOINT_PATH = "checkpoint_path"  # the key TuneReportCallback uses for a persisted checkpoint


def lane_threads(resources: dict[str, Any]) -> int:
    """torch threads of a trial's worker: the CPUs it was given (``cpus_per_worker``, at
    least one), not every core of the machine."""
    return max(1, int(float(resources["cpus_per_worker"])))


def with_threads(values: dict[str, Any], threads: int) -> dict[str, Any]:
    """A run's raw config with the run setting ``threads`` (:class:`ptcore.config.RunConfig`)
    filled in where the study left it unset: the worker applies it like ``orchestrate run
    --set threads=N`` does, and the run's config (result.json, run_config.json, MLflow params)
    records the threads it ran with, so the run can be repeated exactly outside the study."""
    if values.get("threads") is not None:
        return values
    return {**values, "threads": threads}


def _node_id() -> str:
    try:
        import ray

        if not ray.is_initialized():  # get_runtime_context() would start a local Ray just to answer
            return ""
        return ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside Ray
        return ""


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in record.items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            out[k] = v
    return out


# ------------------------------------------------------------------ where reports go


class Channel(Protocol):
    """Where a trial's training process sends its reports and finds the checkpoint to resume from."""

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None: ...

    def get_checkpoint(self) -> Any: ...


class TrainChannel:
    """A Ray Train worker (worker groups): Ray Train's public session API. The controller's
    ``TuneReportCallback`` hands rank 0's reports to the Tune trial."""

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=checkpoint)

    def get_checkpoint(self) -> Any:
        import ray.train

        return ray.train.get_checkpoint()


_LOCAL: Optional[Channel] = None  # local mode: the channel of the trial this process trains now


@contextlib.contextmanager
def local_channel(ch: Channel) -> Iterator[Channel]:
    """Local mode: while the trial trains in this process, its reports go to ``ch``. A Tune
    trial process runs one trial at a time, so one slot per process is enough."""
    global _LOCAL
    before, _LOCAL = _LOCAL, ch
    try:
        yield ch
    finally:
        _LOCAL = before


def channel(local: bool) -> Channel:
    if not local:
        return TrainChannel()
    if _LOCAL is None:
        raise RuntimeError("a local-mode run outside its trial: no report channel installed (see trial.trial_fn)")
    return _LOCAL


def train_report(local: bool) -> Callable[..., None]:
    """``report(metrics, checkpoint=None)`` of this process's trial (see :func:`channel`)."""
    return channel(local).report


def world_rank(local: bool) -> int:
    """This process's rank in a data-parallel worker group (0 in local mode or one worker)."""
    if local:
        return 0
    import ray.train

    return ray.train.get_context().get_world_rank()


def write_position(directory: str, run_index: int, epoch: int, metrics: dict[str, Any], final: bool) -> None:
    write_json_atomic(os.path.join(directory, POSITION),
                      {"run_index": run_index, "epoch": epoch, "final": final, "metrics": metrics}, indent=None)


class ReportEpochs:
    """ptcore callback: every epoch -> ``report(metrics, checkpoint=trainable weights)``.

    ``resumable`` (study ``ray.max_failures`` > 0): every epoch's checkpoint also holds the
    run's training state (:mod:`ptcore.trainstate`) and its position in the trial, so a
    retried process continues after the last reported epoch (:func:`resume_point`)."""

    def __init__(self, cfg, run_index: int, checkpoint: bool = True, local: bool = False, resumable: bool = False,
                 phase: str = ""):
        self.report = train_report(local)
        self.phase = phase
        self.cfg = cfg
        self.run_index = run_index
        self.checkpoint = checkpoint or resumable
        self.resumable = resumable
        self.node = _node_id()
        self.main = world_rank(local) == 0  # data-parallel: rank 0 alone reports checkpoints

    def on_epoch_end(self, epoch: int, record: dict[str, Any], model, state) -> bool:
        import ray.train

        from ptcore.checkpoint import save_checkpoint  # startup time: torch stays out of `orchestrate --help`

        trainable, total = model.param_counts()
        metrics = {
            **_clean(record),
            "epoch": epoch,
            "run_index": self.run_index,
            "seed": self.cfg.seed,
            "final": 0,
            "trainable_params": trainable,
            "total_params": total,
            "layers": model.encoder.backbone.config.num_hidden_layers,
            "node_id": self.node,
            KEEP: float(record.get("dev_primary", 0.0)),
        }
        if not self.checkpoint or not self.main:  # every rank reports (Ray Train waits for all)
            self.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(model, self.cfg, d)
                if self.resumable:
                    state.save(d)
                    write_position(d, self.run_index, epoch, metrics, final=False)
                self.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        failpoints.hit(f"worker.{self.phase}.run{self.run_index}.epoch{epoch}")
        failpoints.jitter(f"{self.cfg.lr}|{self.cfg.seed}|{epoch}")
        return False


# ------------------------------------------------------------------ what a process keeps between runs


class LRU(OrderedDict):
    """A dict that keeps only its ``size`` most recently used entries."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class ProcessCache:
    """What a long-lived trial process keeps between runs: pristine backbones and prepared
    (tokenized) splits. A reused Tune trial actor (local mode) trains many runs, so each
    backbone is loaded and each split tokenized once per process, not once per run.
    Small LRUs: a study touches a handful of (backbone, task) pairs."""

    def __init__(self, max_backbones: int = 3, max_data: int = 8):
        self.backbones = LRU(max_backbones)  # (model, layers, trust_remote_code) -> Backbone
        self.data = LRU(max_data)  # ptcore.train.data_key -> Prepared (filled by train(data_cache=))

    def backbone(self, model: str, layers: Optional[int], trust_remote_code: bool = False):
        from ptcore.backbones import load_backbone  # startup time: torch stays out of `orchestrate --help`

        key = (model, layers, trust_remote_code)
        if key not in self.backbones:
            self.backbones[key] = load_backbone(model, layers, trust_remote_code=trust_remote_code)
        return self.backbones[key]


PROCESS_CACHE = ProcessCache()  # per process: a reused trial actor keeps it across trials


# ------------------------------------------------------------------ resume


@dataclass
class ResumePoint:
    """Where a retried trial process picks up: the last checkpoint the trial reported."""

    run_index: int
    final: bool  # the run's final report: the run is done, the next one starts
    directory: str  # a local copy of the checkpoint (training state inside unless final)


def resume_point(local: bool, workdir: str) -> Optional[ResumePoint]:
    """The trial's last reported checkpoint (worker groups: Ray Train hands a restarted group
    the latest one; local mode: the trial's channel finds it in storage), delivered again so
    that nothing the dead process reported is lost (the Recorder logs each epoch once), and
    copied locally for ``train(resume=)``."""
    import ray.train

    ckpt = channel(local).get_checkpoint()
    if ckpt is None:
        return None
    src = os.path.join(workdir, "resume")
    ckpt.to_directory(src)
    position = os.path.join(src, POSITION)
    if not os.path.isfile(position):
        return None  # a checkpoint without a position (an older study's): start the trial over
    with open(position) as f:
        pos = json.load(f)
    if world_rank(local) == 0:
        again = os.path.join(workdir, "again")
        shutil.copytree(src, again)
        train_report(local)(pos["metrics"], checkpoint=ray.train.Checkpoint.from_directory(again))
    else:
        train_report(local)(pos["metrics"])
    return ResumePoint(int(pos["run_index"]), bool(pos["final"]), src)


# ------------------------------------------------------------------ the runs of a trial


def run_all(config: dict[str, Any]) -> None:
    """Every ptcore run of the trial (``config``: the trial's loop config, see
    :func:`orchestrator.execution.trial.trial_fn`), reporting every epoch and a final record.
    A retried process (``max_failures``) skips the runs the trial finished and continues the
    interrupted one after its last reported epoch."""
    import torch

    from ptcore.data import CACHE_ENV  # startup time: ptcore.data imports torch

    cache_dir = config.get("cache_dir")
    if cache_dir:
        os.environ[CACHE_ENV] = cache_dir  # tokenized splits: made once, reused by every trial
    threads = int(config.get("threads") or 0)
    if threads > 0:
        torch.set_num_threads(threads)  # set up (backbone load, tokenizing) on the trial's CPUs too
    local, resumable = bool(config.get("local")), bool(config.get("resumable"))
    workdir = tempfile.mkdtemp(prefix="ptcore-resume-")
    try:
        resume = resume_point(local, workdir) if resumable else None
        for i, values in enumerate(config["runs"]):
            if resume is not None and (i < resume.run_index or (i == resume.run_index and resume.final)):
                continue  # reported in full before the process died
            state = resume.directory if resume is not None and i == resume.run_index else None
            _train_one(i, values, config, cache_dir, local, resumable, state)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _train_one(i: int, values: dict[str, Any], config: dict[str, Any], cache_dir: Optional[str], local: bool,
               resumable: bool, state: Optional[str]) -> None:
    """One ptcore run of the trial: every epoch reported, then the final record."""
    import ray.train

    from ptcore.train import train  # startup time: torch stays out of `orchestrate --help`

    if int(config.get("threads") or 0) > 0:
        values = with_threads(values, int(config["threads"]))  # the run applies and records it (ptcore.runinfo.run_threads)
    cfg = make_run_config(values)
    backbone = PROCESS_CACHE.backbone(cfg.model, cfg.layers, cfg.trust_remote_code).copy()  # no run touches the pristine one
    cb = ReportEpochs(cfg, i, checkpoint=config.get("checkpoint_every_epoch", False), local=local, resumable=resumable,
                      phase=config.get("phase", ""))
    with tempfile.TemporaryDirectory() as out:
        # search runs are selected on dev alone: no val/test evaluation (time, and no temptation)
        result = train(cfg, backbone=backbone, callbacks=(cb,), output=out, progress=False, cache_dir=cache_dir,
                       data_cache=PROCESS_CACHE.data, report=config.get("phase") != "search", resume=state)
        result.pop("checkpoint", None)  # a temp path; the reported checkpoint replaces it
        metrics = {
            "final": 1,
            "run_index": i,
            "seed": cfg.seed,
            "epoch": result["epochs_run"],
            "dev_primary": float(result["dev"]["primary"]),
            "node_id": cb.node,
            KEEP: FINAL_KEEP + i,
            "result_json": json.dumps(result, default=str),
        }
        if not cb.main:  # data-parallel: rank 0 wrote the checkpoint and reports the record
            cb.report({k: v for k, v in metrics.items() if k != "result_json"})
        else:
            if resumable:
                write_position(out, i, result["epochs_run"], metrics, final=True)
            cb.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(out))
    del backbone, cb, result
    release_memory()


def release_memory() -> None:
    """Between runs of a reused trial process: collect the run's objects and hand freed heap
    back to the OS. glibc keeps freed blocks in per-thread arenas, and without this a trial
    process that trains run after run (fine-tuning: weights, gradients and AdamW state each
    time) grew to 4-6 GB resident over a study on this machine."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass
