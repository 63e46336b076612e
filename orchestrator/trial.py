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

Nothing here imports MLflow: the driver logs (see :mod:`orchestrator.tracking`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from typing import Any

# Train V2 is the default in Ray 2.60; say so explicitly for older 2.5x installs.
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

CELL_KEY = "_cell"  # search trials: the cell's index in the trial config (see orchestrator.search)
KEEP = "keep_score"  # checkpoint retention: best epoch + every run's final checkpoint
FINAL_KEEP = 1e9
# keys of a report that are bookkeeping, not metrics to plot
BOOKKEEPING = {"final", "run_index", "seed", "epoch", KEEP, "result_json", "node_id", "checkpoint_path"}


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """A search trial's config without the routing key ``CELL_KEY``: the values Optuna chose."""
    return {k: v for k, v in config.items() if k != CELL_KEY}


def merge_params(base: dict[str, Any], params: dict[str, Any], run_keys: list[str] | set[str]) -> dict[str, Any]:
    """Searched values into a run's raw config: run settings at the top, the rest into method_args."""
    values = copy.deepcopy(base)
    values.setdefault("method_args", {})
    for k, v in params.items():
        if k in run_keys:
            values[k] = v
        else:
            values["method_args"][k] = v
    return values


def _node_id() -> str:
    try:
        import ray

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


class ReportEpochs:
    """ptcore callback: every epoch -> ``ray.train.report(metrics, checkpoint=trainable weights)``."""

    def __init__(self, cfg, run_index: int, checkpoint: bool = True):
        self.cfg = cfg
        self.run_index = run_index
        self.checkpoint = checkpoint
        self.node = _node_id()

    def on_epoch_end(self, epoch: int, record: dict[str, Any], model) -> bool:
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
        if not self.checkpoint:
            ray.train.report(metrics)
            return False
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(model, self.cfg, d)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        return False


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: run each ptcore run of the trial, reporting as it goes."""
    import ray.train

    from ptcore.backbones import Backbone, load_backbone
    from ptcore.config import make_run_config
    from ptcore.data import CACHE_ENV
    from ptcore.train import train

    cache_dir = config.get("cache_dir")
    if cache_dir:
        os.environ[CACHE_ENV] = cache_dir  # tokenized splits: made once, reused by every trial
    runs = config["runs"]
    pristine, loaded = None, None
    for i, values in enumerate(runs):
        cfg = make_run_config(values)
        if loaded != (cfg.model, cfg.layers):  # one load per trial (a job's runs share the backbone)
            pristine, loaded = load_backbone(cfg.model, cfg.layers), (cfg.model, cfg.layers)
        # a fresh copy per run: fine-tuning trains the backbone, deep prompts hook its layers
        backbone = pristine if len(runs) == 1 else Backbone(copy.deepcopy(pristine.model), pristine.tokenizer, pristine.name, pristine.source)
        cb = ReportEpochs(cfg, i, checkpoint=config.get("checkpoint_epochs", False))
        with tempfile.TemporaryDirectory() as out:
            result = train(cfg, backbone=backbone, callbacks=(cb,), output=out, progress=False, cache_dir=cache_dir)
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
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(out))


def _trainer_class():
    from ray.train.torch import TorchTrainer

    class Trainer(TorchTrainer):
        """TorchTrainer without Ray Data plumbing when no Ray Dataset is passed (ptcore loads
        its own data): Train V2 would otherwise start a DatasetManager actor, one more
        Python process (~2 s of CPU here), for every run."""

        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            try:
                from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
            except ImportError:  # pragma: no cover - another Ray layout: keep its defaults
                return callbacks
            return [cb for cb in callbacks if not isinstance(cb, DatasetsCallback)]

    return Trainer


def trial_fn(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """Tune function trainable: build the run(s) of this trial and fit a TorchTrainer.

    ``config``: a cell's searched values + its index under ``search.CELL_KEY`` (search), or
    ``{"job": k}`` (final: the runs of ``spec["jobs"][k]``).
    ``spec``: what the driver fixed for the phase (see ``StudyRunner._search``/``_finals``).
    """
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    for key, value in spec.get("train_env", {}).items():  # Train V2 settings (see StudyRunner._train_env)
        os.environ.setdefault(key, value)
    trial_id = ray.tune.get_context().get_trial_id()
    if spec["phase"] == "final":
        job = spec["jobs"][int(config["job"])]
        runs, prefix = job["runs"], job["run_prefix"]
    else:
        cell = spec["cells"][int(config[CELL_KEY])]
        runs, prefix = [merge_params(cell["base"], searched_values(config), spec["run_keys"])], cell["run_prefix"]
    res = spec["resources"]
    per_worker = {"CPU": float(res["cpus_per_worker"])}
    if res["gpus_per_worker"]:
        per_worker["GPU"] = float(res["gpus_per_worker"])
    trainer = _trainer_class()(
        train_loop_per_worker,
        train_loop_config={"runs": runs, "cache_dir": spec["cache_dir"], "checkpoint_epochs": spec.get("checkpoint_epochs", False)},
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
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()


def error_line(err: BaseException | None) -> str:
    """One line saying why a trial failed: the innermost ``SomeError: message`` we can find."""
    if err is None:
        return "unknown error"
    seen, chain = set(), []
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = "\n".join(str(x) for x in chain)
    candidates = [ln.strip() for ln in text.splitlines() if "Error: " in ln or "Exception: " in ln]
    preferred = [ln for ln in candidates if ln.startswith("ptcore.") or "PtcoreError" in ln or "ConfigError" in ln or "TrainingError" in ln or "DataError" in ln]
    line = (preferred or candidates or [f"{type(chain[-1]).__name__}: {chain[-1]}"])[-1]
    return line[:500]
