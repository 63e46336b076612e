"""Every private Ray API the orchestrator uses, behind one switch, with a public fallback.

This is the only module that imports a private Ray module (``ray.*._internal*``), reads or
unwraps a private attribute of a Ray object (``__wrapped__``) or overrides a private method of a
Ray class. Everything else uses Ray's public API, and the test
``tests/orchestrator/test_ray_compat.py`` keeps it that way.

The switch, :func:`fast_path`: True only when Ray's ``major.minor`` is one of
:data:`FAST_PATH_RAY` (the versions this was tested on), the private imports below succeed,
and ``PTCORE_RAY_FAST_PATH`` is not ``0``. The first time a process takes the fallback it says
so on stderr, in one line (:func:`notice`).

What the fast path does (Ray 2.60), and what replaces it otherwise:

* **Single-worker CPU trials** (local mode, :func:`orchestrator.execution.trial.runs_locally`).
  Fast path: the trial fits a ``TorchTrainer`` in Ray Train V2's local mode
  (``ScalingConfig(num_workers=0)``), in the Tune trial process, which Tune reuses from trial to
  trial. Ray 2.60's local mode keeps only the last report and runs no Train callback, so
  :func:`fit_local` swaps in a local controller (``_get_local_controller``,
  ``_set_train_fn_utils`` overridden) whose ``LocalTrainFnUtils`` hands each report to the
  trial's :class:`~orchestrator.execution.worker.Channel` (which forwards it to Tune); and the
  run reports through ``ray.train.report`` with its Tune-session guard unwrapped
  (:class:`LocalTrainChannel`: ``requires_train_worker(raise_in_tune_session=True)`` refuses
  every call made in a Tune trial).
  Fallback (public API only): no Ray Train run at all. The trial process calls the training
  loop itself, and the same channel reports every epoch with the public ``ray.tune.report``
  (checkpoints persisted into the study's storage first, their path under ``checkpoint_path``,
  as on the fast path) and finds a retried trial's checkpoint there. What Ray's own guard
  advises ("use the equivalent ray.tune API"). Tune still reuses the trial process, so the
  backbones and tokenized splits stay loaded, and schedulers see the very same reports.
* **Worker-group trials** (GPU, several workers). Fast path: a ``TorchTrainer`` whose
  ``_create_default_callbacks`` drops Train's ``DatasetsCallback`` when no Ray Dataset is
  passed (ptcore loads its own data), saving one DatasetManager actor (a Python process, ~2 s
  of CPU here) per trial. Fallback: the public ``ray.train.torch.TorchTrainer`` as it is, with
  ``TuneReportCallback`` either way.

The searchers and schedulers (:mod:`orchestrator.execution.search`) need nothing private: they
count what they forward through Tune's public hooks.

Nothing heavy at import time (``orchestrate --help`` imports this through the trial module):
Ray is imported inside the functions.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, Optional

FAST_PATH_RAY = ("2.60",)  # Ray major.minor versions the private fast path was tested on
FAST_PATH_ENV = "PTCORE_RAY_FAST_PATH"  # "0": the public fallback whatever the Ray version

_noticed = False  # the fallback notice: once per process


def ray_version() -> str:
    """The installed Ray's version (``ray.__version__`` once Ray is imported; else from the
    package metadata, without importing Ray)."""
    ray = sys.modules.get("ray")
    version = getattr(ray, "__version__", None)
    if version:
        return str(version)
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("ray")
    except PackageNotFoundError:  # pragma: no cover - Ray is a dependency
        return "none"


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@functools.lru_cache(maxsize=None)
def _private_import_problem() -> Optional[str]:
    """None when every private Ray name of the fast path imports and every private method it
    overrides exists (an override of a method Ray renamed would silently do nothing); else why not."""
    try:
        import ray.train
        from ray.train.torch import TorchTrainer
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback  # noqa: F401
        from ray.train.v2._internal.execution.local_mode.torch import LocalTorchController
        from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils  # noqa: F401
    except Exception as e:  # ImportError, or whatever a half-matching Ray raises on import
        return f"{type(e).__name__}: {e}"
    for owner, name in ((TorchTrainer, "_create_default_callbacks"), (TorchTrainer, "_get_local_controller"),
                        (LocalTorchController, "_set_train_fn_utils"), (ray.train.report, "__wrapped__"),
                        (ray.train.get_checkpoint, "__wrapped__"), (LocalTrainFnUtils, "report")):
        if not hasattr(owner, name):
            return f"{getattr(owner, '__qualname__', owner)}.{name} is missing"
    return None


def fallback_reason(imports: bool = True) -> Optional[str]:
    """Why this process must use the public fallback, or None for the fast path. ``imports=False``
    skips the import check (it imports Ray Train and torch): the environment and version only."""
    if os.environ.get(FAST_PATH_ENV, "").strip() == "0":
        return f"{FAST_PATH_ENV}=0"
    version = ray_version()
    if _major_minor(version) not in FAST_PATH_RAY:
        return f"Ray {version} is not one of the fast-path versions tested ({', '.join(FAST_PATH_RAY)})"
    if imports:
        problem = _private_import_problem()
        if problem:
            return f"Ray {version}'s private Train API is not as tested ({problem})"
    return None


def fast_path() -> bool:
    """Whether trials may use the private Ray API above (else the public fallback). Says why
    not, once per process, the first time it answers False."""
    reason = fallback_reason()
    if reason is not None:
        notice(reason)
        return False
    return True


def notice(reason: str) -> None:
    """One line on stderr, the first time in a process: trials take the public fallback, and why."""
    global _noticed
    if _noticed:
        return
    _noticed = True
    print(f"warning: {reason}: trials use Ray's public API only (orchestrator/execution/ray_compat.py): single-worker "
          "trials report through ray.tune.report instead of Ray Train's local mode, and worker-group trials start "
          "Train's dataset manager, one more process (~2 s) per trial", file=sys.stderr, flush=True)


def notice_if_fallback() -> None:
    """The driver, before any trial starts: the notice if the environment or the Ray version
    already rule the fast path out (cheap: imports neither Ray Train nor torch)."""
    reason = fallback_reason(imports=False)
    if reason is not None:
        notice(reason)


# ------------------------------------------------------------------ the fast path (call only when fast_path())


class LocalTrainChannel:
    """Local mode, fast path: the run reports with ``ray.train.report``, behind its Tune-session
    guard (``functools.wraps`` keeps the guarded function as ``__wrapped__``). The controller of
    :func:`fit_local` hands each report on to the trial's channel."""

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        import ray.train

        ray.train.report.__wrapped__(metrics, checkpoint=checkpoint)

    def get_checkpoint(self) -> Any:
        import ray.train

        return ray.train.get_checkpoint.__wrapped__()


def fit_local(train_fn: Callable[[dict], None], loop_config: dict[str, Any], name: str, storage_path: str, sink) -> None:
    """Fit ``train_fn(loop_config)`` in Ray Train V2's local mode in this process, every report
    (and the checkpoint to resume from) going to ``sink`` (``report(metrics, checkpoint)``,
    ``get_checkpoint()``: :class:`orchestrator.execution.trial.TuneReports`)."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.execution.local_mode.torch import LocalTorchController
    from ray.train.v2._internal.execution.train_fn_utils import LocalTrainFnUtils, set_train_fn_utils

    class Forwarding(LocalTrainFnUtils):
        def get_checkpoint(self):
            return sink.get_checkpoint()

        def report(self, metrics, checkpoint=None, *args, **kwargs):
            super().report(metrics, checkpoint, *args, **kwargs)
            sink.report(metrics, checkpoint)

    class Controller(LocalTorchController):
        def _set_train_fn_utils(self) -> None:
            set_train_fn_utils(Forwarding(experiment_name=self.experiment_name, world_size=1, world_rank=0, local_rank=0,
                                          local_world_size=1, node_rank=0, dataset_shards=None))

    class LocalTrainer(TorchTrainer):
        def _get_local_controller(self):
            return Controller(self.run_config.name, datasets=None)

    LocalTrainer(train_fn, train_loop_config=loop_config, scaling_config=ray.train.ScalingConfig(num_workers=0),
                 run_config=ray.train.RunConfig(name=name, storage_path=storage_path)).fit()


def lean_trainer_class():
    """``TorchTrainer`` without Ray Data plumbing when no Ray Dataset is passed (ptcore loads its
    own data): Train V2 would otherwise start a DatasetManager actor, one more Python process
    (~2 s of CPU here), for every run."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [cb for cb in callbacks if not isinstance(cb, DatasetsCallback)]

    return Trainer
