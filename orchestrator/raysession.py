"""Ray in the study's driver: the Tune/Train settings, Ray started with the first piece of
work and shut down at the end, and SIGTERM kept as an interrupt.

* Ray starts lazily (:meth:`RaySession.ensure`), so a finished study resumes instantly.
* Ctrl-C and ``kill`` both end a study as a ``KeyboardInterrupt`` (MLflow runs end KILLED,
  no row is written: resume re-runs them). Tune's own SIGINT handler is turned off, and
  SIGTERM raises :class:`StudyInterrupted`; ``ray.init`` installs a C++ handler that
  aborts the driver on SIGTERM (MLflow runs left RUNNING), so ours goes back after it.
* :meth:`RaySession.train_env`: the Ray Train V2 settings every trial sets.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from .study import LoadedStudy


class StudyInterrupted(KeyboardInterrupt):
    pass


def _raise_interrupt(signum, frame):
    raise StudyInterrupted(f"signal {signum}")


def tune_env_defaults() -> None:
    """Tune settings for the driver (a variable already set in the environment wins)."""
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C -> KeyboardInterrupt -> runs KILLED
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we log to MLflow ourselves
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def sigterm_handler() -> Any:
    """The SIGTERM handler now installed (to put back with :func:`restore_sigterm`)."""
    return signal.getsignal(signal.SIGTERM)


def trap_sigterm() -> None:
    """SIGTERM raises :class:`StudyInterrupted`, so ``kill`` ends the study like Ctrl-C does."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def restore_sigterm(handler: Any) -> None:
    signal.signal(signal.SIGTERM, handler)


class RaySession:
    """The driver's Ray: the cluster at ``address`` (else ``$RAY_ADDRESS``, else a local Ray)."""

    def __init__(self, ls: LoadedStudy, address: Optional[str], verbose: bool):
        self.ls = ls
        self.address = address
        self.verbose = verbose
        self.started = False

    def _init(self) -> None:
        import ray

        # a local Ray inherits the driver's environment; workers on other nodes get the
        # cache dir through train_loop_config (no runtime_env: it slows every worker start)
        os.environ.update({"PTCORE_CACHE_DIR": self.ls.cache_dir, "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "1"})
        if not self.verbose:  # Tune's notes on slow callbacks (artifact uploads) and on the loggers we turned off
            for name in ("ray.tune.analysis.experiment_analysis", "ray.tune.utils.util"):
                logging.getLogger(name).setLevel(logging.ERROR)
        kwargs: dict[str, Any] = dict(
            log_to_driver=self.verbose,
            logging_level=logging.INFO if self.verbose else logging.WARNING,
        )
        if self.address:
            ray.init(address=self.address, **kwargs)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(**kwargs)  # RAY_ADDRESS names the cluster
        else:
            ray.init(num_cpus=self.ls.study.ray.num_cpus, **kwargs)

    def ensure(self) -> None:
        """Ray starts with the first piece of work (a finished study resumes instantly)."""
        if not self.started:
            self._init()
            self.started = True
            # ray.init installs a C++ handler that aborts the driver on SIGTERM (MLflow runs
            # left RUNNING): ours again, so `kill` ends the study like Ctrl-C does
            trap_sigterm()

    def shutdown(self) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def train_env(self) -> dict[str, str]:
        """Ray Train V2 settings for every trial (set in the trial, which starts the Train run;
        a variable already set in the environment wins).

        * Train's controller polls its workers every 2 s by default: a finished run held its
          lane up to 2 s longer, and runs here last seconds to minutes.
        * A reused trial process waits for the previous trial's training thread to end
          before it takes the next trial; Tune gives up after 2 s (and Ray 2.60 then leaves
          the next trial PENDING for ever). A stopped trial's thread unwinds at its next
          report, which on a loaded machine can take longer: 60 s.
        * A Ray that this driver started is one machine: no spot preemption to watch for and
          no cluster metrics to export; each would cost CPU per run (the watcher is one
          more Python process per run).
        """
        env = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "TUNE_FUNCTION_THREAD_TIMEOUT_S": "60"}
        if not (self.address or os.environ.get("RAY_ADDRESS")):
            env.update({"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"})
        return {k: os.environ.get(k, v) for k, v in env.items()}
