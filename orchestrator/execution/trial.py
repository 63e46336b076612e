"""The Ray side of one trial: a Tune *function* trainable that trains the trial's runs.

Ray 2.60 (Train V2) composes the two libraries like this (a ``Trainer`` handed straight to
a ``Tuner`` is no longer supported)::

    Tuner ── trial_fn(config)                      Tune trial = a light driver process
               └── TorchTrainer(train_loop_per_worker).fit()
                     └── worker: ptcore.train(cfg, callbacks=[ReportEpochs])
                           └── ray.train.report(metrics, checkpoint) every epoch
                                 └── TuneReportCallback -> the Tuner (ASHA, Optuna, our Callback)

Single-worker CPU trials (:func:`runs_locally`) train in the Tune trial process itself, which
Tune reuses from trial to trial, and report to Tune through :class:`TuneReports`: on Ray's
tested versions inside Ray Train V2's local mode, else through the public ``ray.tune.report``
(both in :mod:`orchestrator.execution.ray_compat`, which holds every private Ray API).

A trial runs one or more ptcore runs in sequence (``runs``): a search trial runs one,
a final trial runs one per seed of its chunk (one process start for several seeds).
Each run reports every epoch (metrics + a checkpoint of the trainable weights) and a last
report with ``final=1`` carrying ptcore's whole result record and a checkpoint of the
best epoch (``trainable.safetensors`` + ``run_config.json`` + ``result.json``). The loop
over the runs, resume and the per-process caches are :mod:`orchestrator.execution.worker`.

Nothing here imports MLflow: the driver logs (see :mod:`orchestrator.tracking.tracker`).
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from orchestrator.common import failpoints
from orchestrator.common.faults import OutOfMemory, classify, trial_out_of_memory
from orchestrator.execution import ray_compat, worker
from orchestrator.execution.worker import CHECKPOINT_PATH, KEEP, POSITION, lane_threads
from orchestrator.ledger.statuses import FINAL
from ptcore.config import split_settings

# Train V2 is the default in Ray 2.60; say so explicitly for older 2.5x installs.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

CELL_KEY = "_cell"  # search trials: the cell's index in the trial config (see orchestrator.execution.search)
# keys of a report that are bookkeeping, not metrics to plot
BOOKKEEPING = {"final", "run_index", "seed", "epoch", KEEP, "result_json", "node_id", CHECKPOINT_PATH}


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """A search trial's config without the routing key ``CELL_KEY``: the values Optuna chose."""
    return {k: v for k, v in config.items() if k != CELL_KEY}


def merge_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Searched values into a run's raw config: run settings at the top, the rest into
    method_args (:func:`ptcore.config.split_settings` tells them apart)."""
    values = copy.deepcopy(base)
    run, opts = split_settings(params)
    values.update(run)
    values["method_args"] = {**(values.get("method_args") or {}), **opts}
    return values


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker (or, in local mode, the reused Tune trial process): run each ptcore
    run of the trial (:func:`orchestrator.execution.worker.run_all`), reporting every epoch and a
    final record. A retried process (``max_failures``) skips the runs the trial finished and
    continues the interrupted one after its last reported epoch."""
    worker.run_all(config)


# ------------------------------------------------------------------ two ways to run a trial


def runs_locally(resources: dict[str, Any], trial_mode: str = "auto") -> bool:
    """Local mode (the training function runs inside the Tune trial process, which Tune
    reuses across trials) for single-worker CPU trials; a Ray Train worker group otherwise.
    ``trial_mode`` (study ``ray.trial_mode``) forces one or the other."""
    ray_compat.notice_if_fallback()  # the driver asks before trials start: the fallback notice lands beside its plan
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
    dest = os.path.join(storage_path, dest_rel)
    failpoints.hit("checkpoint.persist", dest)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(src, dest)  # a rename where the temp dir and storage share a filesystem
    return dest


class TuneReports:
    """Local mode: where a trial's reports go (a :class:`~orchestrator.execution.worker.Channel`).
    Each report is handed to the trial's Tune session (``ray.tune.report``: ASHA, Optuna and
    the Recorder see every epoch), with its checkpoint moved into storage first and its path
    under ``checkpoint_path``, exactly as ``TuneReportCallback`` delivers a worker group's.
    ``persist`` False: checkpoints are dropped (nothing would read them).

    A retried trial (its process died) finds what the dead process persisted
    (:func:`latest_checkpoint`), and its new checkpoints are numbered on from there."""

    def __init__(self, storage_path: str, run_name: str, persist: bool):
        self.storage_path, self.run_name, self.persist = storage_path, run_name, persist
        self.latest, self.reports = latest_checkpoint(storage_path, run_name) if persist else (None, 0)

    def get_checkpoint(self):
        return self.latest

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        import ray.tune

        forwarded = dict(metrics)
        if checkpoint is not None and self.persist:
            forwarded[CHECKPOINT_PATH] = persist_checkpoint(checkpoint.path, self.storage_path, self.run_name, self.reports)
        self.reports += 1
        ray.tune.report(forwarded)  # synchronous: returns when Tune asks for more (or exits the thread on a stop)


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
    """The ``TorchTrainer`` of worker-group trials: without Ray Data plumbing on the fast path
    (:func:`orchestrator.execution.ray_compat.lean_trainer_class`), Ray's own otherwise."""
    if ray_compat.fast_path():
        return ray_compat.lean_trainer_class()
    from ray.train.torch import TorchTrainer

    return TorchTrainer


@dataclass(frozen=True)
class RunSpec:
    """What the driver fixes for a phase's trials: ``trial_fn``'s ``spec``. Field names are the
    study file's own (``resources.*``, ``ray.checkpoint_every_epoch``, ``ray.trial_mode``,
    ``ray.max_failures``), so a setting keeps one name from the YAML file to the worker loop.

    ``cells`` (search): a cell's index -> ``{"base": its RunConfig values, "run_prefix": ...}``;
    ``jobs`` (final): one ``{"runs": [...], "run_prefix": ...}`` per trial."""

    phase: str
    resources: Mapping[str, Any]  # the study's resources (Resources.model_dump())
    cache_dir: Optional[str]
    storage_path: str
    checkpoint_every_epoch: bool
    trial_mode: str
    max_failures: int
    train_env: Mapping[str, str] = field(default_factory=dict)  # Train V2 settings (RaySession.train_env)
    cells: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    jobs: tuple[Mapping[str, Any], ...] = ()


def trial_fn(config: dict[str, Any], spec: RunSpec) -> None:
    """Tune function trainable: build the run(s) of this trial and train them.

    ``config``: a cell's searched values + its index under ``search.CELL_KEY`` (search), or
    ``{"job": k}`` (final: the runs of ``spec.jobs[k]``).
    ``spec``: what the driver fixed for the phase (:class:`RunSpec`).

    Single-worker CPU trials train inside this (reused) trial process: no controller or worker
    processes to start, and torch, transformers, the backbone and the tokenized splits stay
    loaded from one trial to the next. Their reports reach Tune through :class:`TuneReports`,
    on the fast path by way of Ray Train's local mode (:func:`ray_compat.fit_local`), otherwise
    directly (public API only). Other trials fit a worker group.
    """
    import ray.train
    import ray.tune

    for key, value in spec.train_env.items():  # Train V2 settings (see RaySession.train_env)
        os.environ.setdefault(key, value)
    trial_id = ray.tune.get_context().get_trial_id()
    if spec.phase == FINAL:
        job = spec.jobs[int(config["job"])]
        runs, prefix = job["runs"], job["run_prefix"]
    else:
        cell = spec.cells[int(config[CELL_KEY])]
        runs, prefix = [merge_params(cell["base"], searched_values(config))], cell["run_prefix"]
    res = spec.resources
    local = runs_locally(res, spec.trial_mode)
    retries = spec.max_failures
    name = f"{prefix}__{trial_id}"  # stable: derived from the study, the cell and the trial (no timestamps)
    loop_config = {"runs": runs, "cache_dir": spec.cache_dir, "checkpoint_every_epoch": spec.checkpoint_every_epoch,
                   "phase": spec.phase, "resumable": retries > 0,
                   "threads": lane_threads(res)}  # the CPUs a worker was given, not every core (each run's `threads`)
    if local:
        loop_config.update(local=True)
        # only final runs' checkpoints have a reader (the Recorder logs them to MLflow)
        # (and a retried trial's: it continues from the last one; Tune retries it, see phases.tune_run_config)
        persist = spec.phase == FINAL or spec.checkpoint_every_epoch or retries > 0
        sink = TuneReports(spec.storage_path, name, persist)
        if ray_compat.fast_path():
            with worker.local_channel(ray_compat.LocalTrainChannel()):
                ray_compat.fit_local(train_loop_per_worker, loop_config, name, spec.storage_path, sink)
        else:  # public API only: the loop runs here and reports straight to Tune
            with worker.local_channel(sink):
                train_loop_per_worker(loop_config)
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
            name=name,
            storage_path=spec.storage_path,
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
        fault = classify(err)
        if isinstance(fault, OutOfMemory):  # MemoryError, CUDA or Ray's out-of-memory errors
            return fault.line()[:500]
    candidates = [ln.strip() for ln in text.splitlines() if "Error: " in ln or "Exception: " in ln]
    preferred = [ln for ln in candidates if ln.startswith("ptcore.") or "PtcoreError" in ln or "ConfigError" in ln or "TrainingError" in ln or "DataError" in ln]
    line = (preferred or candidates or [fallback])[-1]
    if trial_out_of_memory(text):  # say so first: the innermost line alone may only read "actor died"
        oom = next((ln.strip() for ln in text.splitlines() if trial_out_of_memory(ln)), line)
        return OutOfMemory(oom).line()[:500]
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
