"""Ray in the study's driver: the Tune/Train settings, Ray started with the first piece of
work and shut down at the end, and SIGTERM kept as an interrupt.

* Ray starts lazily (:meth:`RaySession.ensure`), so a finished study resumes instantly.
* Ctrl-C and ``kill`` both end a study as a ``KeyboardInterrupt`` (MLflow runs end KILLED,
  no row is written: resume re-runs them). Tune's own SIGINT handler is turned off, and
  SIGTERM and SIGINT raise :class:`StudyInterrupted`; ``ray.init`` installs a C++ handler that
  aborts the driver on SIGTERM (MLflow runs left RUNNING), so ours goes back after it. A
  signal is also remembered, and :func:`check_interrupt` raises it again at safe points: one
  that lands in a ``__del__`` would otherwise be dropped and the study run on.
* :meth:`RaySession.train_env`: the Ray Train V2 settings every trial sets.
* :class:`LocalRayLock`: one study with a local Ray per machine. A second local Ray beside a
  running one is what Ray 2.60 does when asked (``ray.init(num_cpus=...)`` with no address
  starts a new cluster: a random GCS port, its own session dir), but both then take every
  core, the second one's dashboard agent finds its port (52365) taken and runs without its
  HTTP server, its dashboard moves to 8266, ``--address auto`` and ``ray status`` see two
  clusters, and on a machine the first study keeps busy its start-up can outlast Ray's
  30 s waits. So the second study is refused before anything starts, with the running one
  named and the ways on (wait; one shared Ray via ``--address``; ``--address local``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, Optional

from orchestrator.ledger.outdir import output_dir_busy, pid_alive
from orchestrator.study import LoadedStudy, StudyError


class StudyInterrupted(KeyboardInterrupt):
    pass


_pending: list[int] = []  # signals received and not yet acted on


def _raise_interrupt(signum, frame):
    _pending.append(signum)
    raise StudyInterrupted(f"signal {signum}")


def check_interrupt() -> None:
    """Raise the interrupt again if a signal's was lost: one that lands in a ``__del__`` (Ray's
    actor handles have them) is printed as "Exception ignored" and dropped, and the study
    would run on to exit 0. Called at safe points: every step of the Tuner loop, between
    phases."""
    if _pending:
        raise StudyInterrupted(f"signal {_pending[0]}")


def tune_env_defaults() -> None:
    """Tune settings for the driver (a variable already set in the environment wins)."""
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C -> KeyboardInterrupt -> runs KILLED
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we log to MLflow ourselves
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_handlers() -> dict:
    """The SIGTERM and SIGINT handlers now installed (to put back with :func:`restore_signals`)."""
    return {sig: signal.getsignal(sig) for sig in SIGNALS}


def trap_signals() -> None:
    """SIGTERM and SIGINT raise :class:`StudyInterrupted` and are remembered (see
    :func:`check_interrupt`), so ``kill`` ends the study as Ctrl-C does, and neither is lost."""
    _pending.clear()
    _install_handlers()


def _install_handlers() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _raise_interrupt)


def restore_signals(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


LOCAL = "local"  # --address local: a local Ray of this study's own, even beside another study's
LOCK_NAME = "ptcore-study-local-ray.lock"


def uses_local_ray(address: Optional[str]) -> bool:
    """Whether a study with this address starts a Ray of its own on this machine."""
    return address == LOCAL or (not address and not os.environ.get("RAY_ADDRESS"))


def machine_lock_path() -> Path:
    """The machine-wide lock of local-Ray studies, beside Ray's own temp dir (Ray's rule:
    ``$RAY_TMPDIR``, else ``$TMPDIR``, else ``/tmp``; ``ray/`` there holds its sessions)."""
    return Path(os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp") / LOCK_NAME


class LocalRayLock:
    """Held while a study runs with a local Ray (``flock``: the kernel releases it when the
    driver dies, ``kill -9`` too). The file holds the holder's pid, study name, output dir and
    start time. Another local-Ray study is refused with those, unless ``allow_second``
    (``--address local``); a lock whose recorded holder is no longer alive never blocks;
    a lock file this user cannot open is no lock (the study runs as before)."""

    def __init__(self, name: str, output_dir: Path, file: Optional[Path] = None, *, allow_second: bool = False,
                 path: Optional[Path] = None):
        self.info = {"pid": os.getpid(), "study": name, "output_dir": str(output_dir), "file": str(file) if file else None}
        self.output_dir = Path(output_dir)
        self.allow_second = allow_second
        self.path = path or machine_lock_path()
        self.fd: Optional[int] = None

    def holder(self) -> dict:
        """What the lock file says about its holder ({} if unreadable)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _open(self) -> tuple[Optional[int], bool]:
        """The lock file's fd and whether it can be written (another user's file may be
        read-only to us, which still shows whether it is held); (None, False): no lock file."""
        for flags in (os.O_RDWR, os.O_RDWR | os.O_CREAT):  # no O_CREAT on an existing file (fs.protected_regular)
            try:
                fd = os.open(self.path, flags, 0o666)
            except FileNotFoundError:
                continue
            except OSError:
                break
            try:
                if os.fstat(fd).st_uid == os.getuid():
                    os.fchmod(fd, 0o666)  # any user's study can take it once this one is over
            except OSError:
                pass
            return fd, True
        try:
            return os.open(self.path, os.O_RDONLY), False
        except OSError:  # a read-only /tmp: no lock, the study runs as before
            return None, False

    def __enter__(self) -> "LocalRayLock":
        fd, writable = self._open()
        if fd is None:
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other: dict = {}
            for _ in range(10):  # its holder writes its record right after taking the lock
                other = self.holder()
                if pid_alive(other.get("pid")):
                    break
                time.sleep(0.05)
            if pid_alive(other.get("pid")) and not self.allow_second:
                raise StudyError(self.refusal(other)) from None
            return self  # held by what a dead driver left behind, or a second Ray asked for (--address local)
        if not writable:  # free, but we could not record ourselves: hold nothing rather than a nameless lock
            os.close(fd)
            return self
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({**self.info, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        self.fd = fd
        return self

    def refusal(self, other: dict) -> str:
        if other.get("output_dir") and Path(other["output_dir"]).resolve() == self.output_dir.resolve():
            return output_dir_busy(self.output_dir, other.get("pid"))
        since = f", since {other['started']}" if other.get("started") else ""
        return (
            f"study {other.get('study')!r} is already running on this machine with its own local Ray (pid {other.get('pid')}, "
            f"output {other.get('output_dir')}{since}); a second local Ray would compete for the same cores and Ray's default ports. "
            f"Wait for it to finish; or, to run studies side by side, start one Ray for them (`ray start --head --port 6380`) "
            f"and pass --address auto to each; or pass --address local to start a second local Ray anyway"
        )

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class RaySession:
    """The driver's Ray: the cluster at ``address`` (else ``$RAY_ADDRESS``, else a local Ray)."""

    def __init__(self, ls: LoadedStudy, address: Optional[str], verbose: bool):
        self.ls = ls
        self.address = address
        self.verbose = verbose
        self.started = False

    @property
    def local(self) -> bool:
        """This study starts a Ray of its own (no cluster address, or ``local``)."""
        return uses_local_ray(self.address)

    def machine_lock(self) -> ContextManager:
        """A study that starts its own Ray holds :class:`LocalRayLock` (one per machine;
        ``--address local`` runs beside another); a study on a cluster needs none."""
        if not self.local:
            return nullcontext()
        return LocalRayLock(self.ls.name, self.ls.output_dir, self.ls.path, allow_second=self.address == LOCAL)

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
        if self.local:
            # always a new Ray of this study's own, as documented: with no address Ray itself would
            # join a `ray start` cluster it finds recorded in /tmp/ray (a dead one: a connect time-out)
            ray.init(address=LOCAL, num_cpus=self.ls.study.ray.num_cpus, **kwargs)
        elif self.address:
            ray.init(address=self.address, **kwargs)
        else:
            ray.init(**kwargs)  # RAY_ADDRESS names the cluster

    def ensure(self) -> None:
        """Ray starts with the first piece of work (a finished study resumes instantly)."""
        if not self.started:
            self._init()
            self.started = True
            # ray.init installs a C++ handler that aborts the driver on SIGTERM (MLflow runs
            # left RUNNING): ours again, so `kill` ends the study like Ctrl-C does
            _install_handlers()  # not trap_signals(): a signal already received stays pending

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
        if self.local:
            env.update({"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"})
        return {k: os.environ.get(k, v) for k, v in env.items()}
