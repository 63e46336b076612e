"""The Ray side of one trial: a Tune *function* trainable that launches a Ray Train run.

Ray 2.60 (Train V2) composes the two libraries like this (a ``Trainer`` handed straight to
a ``Tuner`` is no longer supported)::

    Tuner ── trial_fn(config)                      Tune trial = a light driver process
               └── TorchTrainer(train_loop_per_worker).fit()
                     └── worker: ptcore.train(cfg, callbacks=[ReportEpochs])
                           └── ray.train.report(metrics, checkpoint) every epoch
                                 └── TuneReportCallback -> the Tuner (ASHA, Optuna, our Callback)

A trial runs one or more ptcore runs in sequence (``runs``): a search trial runs one,
a final trial runs one per seed of its chunk (one process start for several seeds).
Each run reports every epoch (metrics + a checkpoint of the trainable weights) and a last
report with ``final=1`` carrying ptcore's whole result record and a checkpoint of the
best epoch (``trainable.safetensors`` + ``run_config.json`` + ``result.json``).

Nothing here imports MLflow: the driver logs (see :mod:`orchestrator.tracking.tracker`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from orchestrator.common import failpoints

# Train V2 is the default in Ray 2.60; say so explicitly for older 2.5x installs.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

CELL_KEY = "_cell"  # search trials: the cell's index in the trial config (see orchestrator.execution.search)
KEEP = "keep_score"  # checkpoint retention: best epoch + every run's final checkpoint
FINAL_KEEP = 1e9
# keys of a report that are bookkeeping, not metrics to plot
BOOKKEEPING = {"final", "run_index", "seed", "epoch", KEEP, "result_json", "node_id", "checkpoint_path"}


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """A search trial's config without the routing key ``CELL_KEY``: the values Optuna chose."""
    return {k: v for k, v in config.items() if k != CELL_KEY}


def merge_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Searched values into a run's raw config: run settings at the top, the rest into
    method_args (:func:`ptcore.config.split_settings` tells them apart)."""
    from ptcore.config import split_settings

    values = copy.deepcopy(base)
    run, opts = split_settings(params)
    values.update(run)
    values["method_args"] = {**(values.get("method_args") or {}), **opts}
    return values


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


def train_report(local: bool):
    """``ray.train.report``. In local mode the training function runs inside the Tune
    trial's own thread, where Ray 2.60's public wrapper refuses every call because it sees
    a Tune session (``requires_train_worker(raise_in_tune_session=True)``), although the
    local controller it would call handles reports fine: there, call the function behind
    that guard (``functools.wraps`` keeps it as ``__wrapped__``)."""
    import ray.train

    return getattr(ray.train.report, "__wrapped__", ray.train.report) if local else ray.train.report


POSITION = "position.json"  # in a reported checkpoint: which run and epoch it ends, and the report itself


def world_rank(local: bool) -> int:
    """This process's rank in a data-parallel worker group (0 in local mode or one worker)."""
    if local:
        return 0
    import ray.train

    return ray.train.get_context().get_world_rank()


def write_position(directory: str, run_index: int, epoch: int, metrics: dict[str, Any], final: bool) -> None:
    from ptcore.fileio import write_json_atomic

    write_json_atomic(os.path.join(directory, POSITION),
                      {"run_index": run_index, "epoch": epoch, "final": final, "metrics": metrics}, indent=None)


class ReportEpochs:
    """ptcore callback: every epoch -> ``ray.train.report(metrics, checkpoint=trainable weights)``.

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
        from ptcore.checkpoint import save_checkpoint

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


# ------------------------------------------------------------------ the worker's loop


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
        from ptcore.backbones import load_backbone

        key = (model, layers, trust_remote_code)
        if key not in self.backbones:
            self.backbones[key] = load_backbone(model, layers, trust_remote_code=trust_remote_code)
        return self.backbones[key]


PROCESS_CACHE = ProcessCache()  # per process: a reused trial actor keeps it across trials


@dataclass
class ResumePoint:
    """Where a retried trial process picks up: the last checkpoint the trial reported."""

    run_index: int
    final: bool  # the run's final report: the run is done, the next one starts
    directory: str  # a local copy of the checkpoint (training state inside unless final)


def resume_point(local: bool, workdir: str) -> Optional[ResumePoint]:
    """The trial's last reported checkpoint (``ray.train.get_checkpoint()``: Ray Train hands a
    restarted worker group the latest one; in local mode :func:`_local_controller_class`
    finds it in storage), delivered again so that nothing the dead process reported is lost
    (the Recorder logs each epoch once), and copied locally for ``train(resume=)``."""
    import ray.train

    get = getattr(ray.train.get_checkpoint, "__wrapped__", ray.train.get_checkpoint) if local else ray.train.get_checkpoint
    ckpt = get()
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker (or, in local mode, the reused Tune trial process): run each ptcore
    run of the trial, reporting every epoch and a final record through ``ray.train.report``.
    A retried process (``max_failures``) skips the runs the trial finished and continues the
    interrupted one after its last reported epoch."""
    import torch

    from ptcore.data import CACHE_ENV

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

    from ptcore.config import make_run_config
    from ptcore.train import train

    if int(config.get("threads") or 0) > 0:
        values = with_threads(values, int(config["threads"]))  # the run applies and records it (ptcore.runinfo.run_threads)
    cfg = make_run_config(values)
    backbone = PROCESS_CACHE.backbone(cfg.model, cfg.layers, cfg.trust_remote_code).copy()  # no run touches the pristine one
    cb = ReportEpochs(cfg, i, checkpoint=config.get("checkpoint_epochs", False), local=local, resumable=resumable,
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


# ------------------------------------------------------------------ two ways to run a trial


def runs_locally(resources: dict[str, Any], trial_mode: str = "auto") -> bool:
    """Local mode (the training function runs inside the Tune trial process, which Tune
    reuses across trials) for single-worker CPU trials; a Ray Train worker group otherwise.
    ``trial_mode`` (study ``ray.trial_mode``) forces one or the other."""
    if trial_mode != "auto":
        return trial_mode == "local"
    return int(resources["workers_per_trial"]) == 1 and not float(resources["gpus_per_worker"])


def persist_checkpoint(src: str, storage_path: str, run_name: str, index: int) -> str:
    """Move a reported checkpoint directory into the study's storage (local path or a
    pyarrow URI such as s3://), where Ray Train would have put it; returns its path."""
    dest_rel = f"{run_name}/checkpoint_{index:06d}"
    if "://" in storage_path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        dest = f"{root.rstrip('/')}/{dest_rel}"
        pyarrow.fs.copy_files(src, dest, destination_filesystem=fs)
        return f"{storage_path.rstrip('/')}/{dest_rel}"
    import shutil

    dest = os.path.join(storage_path, dest_rel)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(src, dest)  # a rename where the temp dir and storage share a filesystem
    return dest


def _local_controller_class():
    """Train V2's local-mode controller, with ``ray.train.report`` forwarded to Tune.

    In local mode (``ScalingConfig(num_workers=0)``) Ray 2.60 runs the training function
    in the calling process and only *keeps* the last report: Train callbacks such as
    ``TuneReportCallback`` never run. This controller installs a ``LocalTrainFnUtils``
    whose ``report`` also hands each report to the Tune session of the trial (so ASHA,
    Optuna and the Recorder see every epoch), with the checkpoint moved into storage and
    its path under ``checkpoint_path``, exactly as ``TuneReportCallback`` delivers it for a
    worker group. ptcore keeps reporting through ``ray.train.report`` either way.
    """
    import ray.tune
    from ray.train.v2._internal.execution.local_mode.torch import LocalTorchController
    from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

    class TuneForwarding(LocalTrainFnUtils):
        def __init__(self, storage_path: str, persist: bool, **kwargs):
            super().__init__(**kwargs)
            self.storage_path, self.persist = storage_path, persist
            self.run_name = kwargs["experiment_name"]
            # a retried trial: what its dead process persisted, and where new checkpoints go
            self.latest, self.reports = latest_checkpoint(storage_path, self.run_name) if persist else (None, 0)

        def get_checkpoint(self):
            return self.latest

        def report(self, metrics, checkpoint=None, *args, **kwargs):
            super().report(metrics, checkpoint, *args, **kwargs)
            forwarded = dict(metrics)
            if checkpoint is not None and self.persist:
                forwarded[CHECKPOINT_PATH] = persist_checkpoint(checkpoint.path, self.storage_path, self.run_name, self.reports)
            self.reports += 1
            ray.tune.report(forwarded)  # synchronous: returns when Tune asks for more (or exits the thread on a stop)

    class Controller(LocalTorchController):
        def __init__(self, experiment_name: str, storage_path: str, persist: bool):
            super().__init__(experiment_name, datasets=None)
            self.storage_path, self.persist = storage_path, persist

        def _set_train_fn_utils(self) -> None:
            set_train_fn_utils(
                TuneForwarding(
                    self.storage_path, self.persist, experiment_name=self.experiment_name, world_size=1, world_rank=0,
                    local_rank=0, local_world_size=1, node_rank=0, dataset_shards=None,
                )
            )

    return Controller


CHECKPOINT_PATH = "checkpoint_path"  # the key TuneReportCallback uses for a persisted checkpoint


def latest_checkpoint(storage_path: str, run_name: str):
    """Local mode, the trial started again after its process died: the newest checkpoint it
    persisted (one with a :data:`POSITION`: written before the checkpoint was moved into
    storage, so a half-copied one is passed over) and the index the next one gets."""
    import pyarrow.fs
    import ray.train

    fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
    base = f"{root.rstrip('/')}/{run_name}"
    infos = fs.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
    found = sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    if not found:
        return None, 0
    following = int(found[-1].rsplit("_", 1)[1]) + 1
    for name in reversed(found):
        if fs.get_file_info(f"{base}/{name}/{POSITION}").type == pyarrow.fs.FileType.File:
            path = f"{storage_path.rstrip('/')}/{run_name}/{name}" if "://" in storage_path else f"{base}/{name}"
            return ray.train.Checkpoint(path), following
    return None, following


def _trainer_class():
    from ray.train.torch import TorchTrainer

    class Trainer(TorchTrainer):
        """TorchTrainer without Ray Data plumbing when no Ray Dataset is passed (ptcore loads
        its own data): Train V2 would otherwise start a DatasetManager actor, one more
        Python process (~2 s of CPU here), for every run. In local mode, reports reach Tune
        (see :func:`_local_controller_class`)."""

        persist_local_checkpoints = True

        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            try:
                from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
            except ImportError:  # pragma: no cover - another Ray layout: keep its defaults
                return callbacks
            return [cb for cb in callbacks if not isinstance(cb, DatasetsCallback)]

        def _get_local_controller(self):
            return _local_controller_class()(self.run_config.name, self.run_config.storage_path, self.persist_local_checkpoints)

    return Trainer


def trial_fn(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """Tune function trainable: build the run(s) of this trial and fit a TorchTrainer.

    ``config``: a cell's searched values + its index under ``search.CELL_KEY`` (search), or
    ``{"job": k}`` (final: the runs of ``spec["jobs"][k]``).
    ``spec``: what the driver fixed for the phase (see ``orchestrator.execution.phases``).

    Single-worker CPU trials run in Train's local mode, inside this (reused) trial process:
    no controller or worker processes to start, and torch, transformers, the backbone and
    the tokenized splits stay loaded from one trial to the next. Other trials fit a worker
    group as before.
    """
    import ray.train
    import ray.tune

    for key, value in spec.get("train_env", {}).items():  # Train V2 settings (see RaySession.train_env)
        os.environ.setdefault(key, value)
    trial_id = ray.tune.get_context().get_trial_id()
    if spec["phase"] == "final":
        job = spec["jobs"][int(config["job"])]
        runs, prefix = job["runs"], job["run_prefix"]
    else:
        cell = spec["cells"][int(config[CELL_KEY])]
        runs, prefix = [merge_params(cell["base"], searched_values(config))], cell["run_prefix"]
    res = spec["resources"]
    local = runs_locally(res, spec.get("trial_mode", "auto"))
    retries = int(spec.get("max_failures", 0))
    loop_config = {"runs": runs, "cache_dir": spec["cache_dir"], "checkpoint_epochs": spec.get("checkpoint_epochs", False),
                   "phase": spec["phase"], "resumable": retries > 0,
                   "threads": lane_threads(res)}  # the CPUs a worker was given, not every core (each run's `threads`)
    if local:
        loop_config.update(local=True)
        trainer = _trainer_class()(
            train_loop_per_worker,
            train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(num_workers=0),
            run_config=ray.train.RunConfig(name=f"{prefix}__{trial_id}", storage_path=spec["storage_path"]),
        )
        # only final runs' checkpoints have a reader (the Recorder logs them to MLflow)
        # (and a retried trial's: it continues from the last one; Tune retries it, see phases.tune_run_config)
        trainer.persist_local_checkpoints = spec["phase"] == "final" or bool(spec.get("checkpoint_epochs")) or retries > 0
        trainer.fit()
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    per_worker = {"CPU": float(res["cpus_per_worker"])}
    if res["gpus_per_worker"]:
        per_worker["GPU"] = float(res["gpus_per_worker"])
    trainer = _trainer_class()(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(res["workers_per_trial"]),
            use_gpu=bool(res["gpus_per_worker"]),
            resources_per_worker=per_worker,
        ),
        run_config=ray.train.RunConfig(
            # stable: derived from the study, the cell and the trial (no timestamps)
            name=f"{prefix}__{trial_id}",
            storage_path=spec["storage_path"],
            callbacks=[TuneReportCallback()],
            # keep every run's final checkpoint (they outscore epochs) + the best epoch so far
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=len(runs), checkpoint_score_attribute=KEEP, checkpoint_score_order="max"
            ),
            # a dead worker: Ray Train restarts the group, which continues from the latest checkpoint
            failure_config=ray.train.FailureConfig(max_failures=retries),
        ),
    )
    trainer.fit()


def error_line(err: BaseException | str | None) -> str:
    """One line saying why a trial failed: the innermost ``SomeError: message`` we can find.
    ``err``: the exception, or the text of a trial's error file (a remote traceback, as Tune
    stores it)."""
    if err is None or (isinstance(err, str) and not err.strip()):
        return "unknown error"
    if isinstance(err, str):
        text, fallback = err, err.strip().splitlines()[-1].strip()
    else:
        seen, chain = set(), []
        e: BaseException | None = err
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            chain.append(e)
            e = e.__cause__ or e.__context__
        text, fallback = "\n".join(str(x) for x in chain), f"{type(chain[-1]).__name__}: {chain[-1]}"
    candidates = [ln.strip() for ln in text.splitlines() if "Error: " in ln or "Exception: " in ln]
    preferred = [ln for ln in candidates if ln.startswith("ptcore.") or "PtcoreError" in ln or "ConfigError" in ln or "TrainingError" in ln or "DataError" in ln]
    line = (preferred or candidates or [fallback])[-1]
    return line[:500]


def trial_error(trial) -> BaseException | str | None:
    """What a failed Tune trial raised, read when Tune reports the failure (``on_trial_error``).

    Ray 2.60 writes the error into the trial's local directory (``error.txt``) and copies it
    to the run's storage later; ``Trial.get_error()`` reads storage only, so during the
    callback it returns None, and every failure read "unknown error". The local file first,
    then what ``get_error()`` finds (storage, or a test double's exception)."""
    path = getattr(trial, "error_file", None)
    if isinstance(path, str) and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        if text.strip():
            return text
    try:
        return trial.get_error()
    except Exception as e:  # pragma: no cover - defensive: an unreadable error is still an error
        return e
