"""Faults a study can meet that are not bugs, what each means, and what to do next.

A study that stops should say in one line why and what to do; a bug keeps its traceback.
Between the two lie faults of the machine or its neighbours: the tracking store went away,
the disk filled, the kernel killed a process for memory. :func:`classify` finds them in an
exception's chain (``__cause__`` / ``__context__``, and the ``.cause`` of Ray's
``RayTaskError`` / ``TuneError`` wrappers, by duck typing: nothing here imports Ray,
SQLAlchemy, psycopg2, Optuna, MLflow or requests; their exceptions are recognised by class
name and module), and each :class:`Fault` gives its one line (:meth:`Fault.line`) and its
exit status.

Exit statuses of ``orchestrate``::

    ====  ====================  ==============================================================
    code  name                  meaning
    ====  ====================  ==============================================================
    0                           done
    1     EXIT_BUG              a bug (the traceback is kept), or a trial that failed on its
                                own (TrialFailed): the same --resume would fail the same way
    2     EXIT_BAD_INPUT        bad input (``ptcore.errors.PtcoreError``): fix the study file
                                or the data, as the line says, and run again
    3     EXIT_RESUMABLE        a fault outside the study (StoreUnavailable, DiskFull,
                                OutOfMemory): when it is cleared, ``--resume`` continues
                                where the study stopped
    130                         interrupted (Ctrl-C)
    ====  ====================  ==============================================================

Which store errors are an outage (:func:`is_store_outage`, what the retry of
``retry.StoreRetry`` waits out): the server cannot be reached or dropped the connection
(psycopg2 ``OperationalError`` with no SQLSTATE or a connection one: class 08, ``57P01-03``
admin/crash shutdown or not yet accepting, ``53300`` too many connections; any
``InterfaceError``; SQLAlchemy's wrappers of those and its ``DisconnectionError``; SQLite's
``database is locked`` / ``unable to open database file`` / ``disk I/O error``;
``requests``' ``ConnectionError``; ``ConnectionRefusedError`` / ``ConnectionResetError`` /
``ConnectionAbortedError``; an Optuna ``StorageInternalError`` or an MLflow
``MlflowException`` whose chain holds one of those, or whose message names a connection
failure). An ``OperationalError`` about something else (a missing table, a statement
timeout, a deadlock) is not an outage: waiting minutes for it would only delay a bug's
traceback. A full disk, on this machine or on the database server (SQLSTATE ``53100``,
SQLite's ``database or disk is full``), is :class:`DiskFull`, never an outage.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import traceback
from pathlib import Path
from typing import Iterator, Optional

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_RESUMABLE = 3

RESUME = "run again with --resume"


def _one_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of ``text``, passwords in URLs hidden, at most ``limit`` chars."""
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    line = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^@/\s]*@", r"\1:***@", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def short_reason(exc: BaseException) -> str:
    """An error in one short line: the database driver's (or socket's) own message where its
    chain has one (``connection to server at "127.0.0.1", port 5432 failed: Connection refused``)."""
    best = exc
    for e in _chain(exc):
        if _outage_kind(e) and _module(e).split(".")[0] in ("psycopg2", "psycopg", "sqlite3", "builtins", "urllib3"):
            best = e
            break
    return _one_line(_text(best)) or type(best).__name__


# ------------------------------------------------------------------ the faults


class Fault(Exception):
    """A fault outside the study's code: :meth:`line` says the cause and the next step."""

    exit_code = EXIT_RESUMABLE

    def line(self) -> str:  # pragma: no cover - every subclass says its own
        raise NotImplementedError

    def __str__(self) -> str:
        return self.line()


class StoreUnavailable(Fault):
    """The MLflow or Optuna store has not answered for longer than ``tracking.outage_s``.

    ``store`` is which store (``mlflow`` / ``optuna``; empty where unknown), ``url_redacted``
    its URL without a password, ``down_s`` how long it had been unreachable (0: unknown),
    ``reason`` the last error, in one line."""

    exit_code = EXIT_RESUMABLE

    def __init__(self, store: str, url_redacted: str, down_s: float, reason: str = ""):
        super().__init__(store, url_redacted, down_s, reason)
        self.store, self.url_redacted, self.down_s, self.reason = store, url_redacted, float(down_s), reason

    def line(self) -> str:
        what = "the tracking store" + (f" {self.store}" if self.store else "")
        what += f" at {self.url_redacted}" if self.url_redacted else ""
        why = f"last error: {_one_line(self.reason, 160)}" if self.reason else ""
        if self.down_s > 0:
            when = f"has been unreachable for {self.down_s:.0f} s ({'; '.join(filter(None, ['tracking.outage_s', why]))})"
        else:
            when = f"is unreachable ({why})" if why else "is unreachable"
        return f"{what} {when}; the study stopped cleanly: when it is back, {RESUME}"


class DiskFull(Fault):
    """No space (or quota) left where the study writes: ``path`` is where (``?``: unknown)."""

    exit_code = EXIT_RESUMABLE

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path

    def line(self) -> str:
        return f"disk full at {self.path}: free space there (or move output_dir / RAY_TMPDIR), then {RESUME}"


class OutOfMemory(Fault):
    """A process ran out of memory: ``what`` says which and how (``MemoryError``, ``CUDA out
    of memory``, ``killed by the out-of-memory killer``...)."""

    exit_code = EXIT_RESUMABLE

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what

    def line(self) -> str:
        return (f"out of memory: {_one_line(self.what, 200)}: lower batch_size or max_length, or give the trial more "
                f"memory (resources), then {RESUME}")


class TrialFailed(Fault):
    """A trial's run failed on its own (its error is not one of the faults above).

    ``exit_code`` is :data:`EXIT_BUG` (1), not :data:`EXIT_RESUMABLE`: ``--resume`` would run
    the same code on the same input and fail the same way, so the user must look first (the
    traceback is in the log the line names). Finished runs are kept, so after the fix
    ``--resume`` still continues from them."""

    exit_code = EXIT_BUG

    def __init__(self, run: str, error: str):
        super().__init__(run, error)
        self.run, self.error = run, error

    def line(self) -> str:
        return (f"run {self.run} failed: {_one_line(self.error, 300)}; its traceback is in the study's logs: fix the "
                f"cause, then {RESUME} (finished runs are kept)")


# ------------------------------------------------------------------ recognising them


def _names(exc: BaseException) -> set[str]:
    """``module.Class`` of every class of ``exc`` (its MRO)."""
    return {f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__}


def _module(exc: BaseException) -> str:
    return type(exc).__module__ or ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first: ``__cause__``, else ``__context__`` unless
    suppressed (what a traceback prints), and a Ray wrapper's ``.cause``; each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        wrapped = getattr(e, "cause", None)  # ray.exceptions.RayTaskError, ray.tune.error.TuneError
        if isinstance(wrapped, BaseException):
            todo.append(wrapped)
        if e.__cause__ is not None:
            todo.append(e.__cause__)
        elif e.__context__ is not None and not e.__suppress_context__:
            todo.append(e.__context__)


_DISK_TEXT = re.compile(r"No space left on device|Disk quota exceeded|database or disk is full", re.I)
_CONNECTION_TEXT = re.compile(
    r"connection refused|could not connect|connection to server|server closed the connection|"
    r"terminating connection|connection (?:already )?closed|connection reset|connection aborted|"
    r"failed to establish a new connection|max retries exceeded|name or service not known|"
    r"could not translate host name|timeout expired|the database system is (?:starting up|shutting down|in recovery mode)|"
    r"ssl connection has been closed|network is unreachable|no route to host|temporarily unavailable",
    re.I,
)
_SQLITE_OUTAGE = re.compile(r"database is locked|database table is locked|unable to open database file|disk I/O error", re.I)
_PG_OUTAGE_CODES = {"57P01", "57P02", "57P03", "53300"}  # admin / crash shutdown, cannot connect now, too many connections
_PG_OUTAGE_NAMES = {"AdminShutdown", "CrashShutdown", "CannotConnectNow", "TooManyConnections", "ConnectionException",
                    "ConnectionDoesNotExist", "ConnectionFailure", "SqlclientUnableToEstablishSqlconnection",
                    "SqlserverRejectedEstablishmentOfSqlconnection"}
_PG_DISK_FULL = "53100"


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the fault
        return ""


def _disk_full(exc: BaseException) -> Optional[DiskFull]:
    if isinstance(exc, Fault):
        return None
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(str(exc.filename) if exc.filename else "?")
    code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
    made = code is None and _module(exc) in ("psycopg2.errors", "psycopg.errors")  # a SQLSTATE's class, made without one
    if code == _PG_DISK_FULL or (made and type(exc).__name__ == "DiskFull"):
        return DiskFull("the PostgreSQL server's data directory")
    text = _text(exc)
    if "database or disk is full" in text.lower():
        return DiskFull("the SQLite store (its directory)")
    if _DISK_TEXT.search(text):  # an OSError's message carried by another error (torch.save, Ray)
        return DiskFull("?")
    return None


def _out_of_memory(exc: BaseException) -> Optional[OutOfMemory]:
    if isinstance(exc, MemoryError):
        text = _one_line(_text(exc), 120)
        return OutOfMemory(f"MemoryError: {text}" if text else "MemoryError")
    names = _names(exc)
    if any(n.endswith(".OutOfMemoryError") and n.split(".")[0] in ("torch", "ray") for n in names):
        kind = "CUDA out of memory" if _module(exc).startswith("torch") else "Ray's memory monitor killed the worker"
        return OutOfMemory(kind)
    if isinstance(exc, RuntimeError) and "CUDA out of memory" in _text(exc):
        return OutOfMemory("CUDA out of memory")
    return None


def _outage_kind(exc: BaseException) -> bool:
    """Whether this one exception (not its chain) says the store cannot be reached."""
    names = _names(exc)
    root = _module(exc).split(".")[0]
    if root in ("psycopg2", "psycopg"):
        if any(n.endswith(".InterfaceError") for n in names):
            return True
        if any(n.endswith(".OperationalError") for n in names):
            code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)
            if code is not None:
                return code.startswith("08") or code in _PG_OUTAGE_CODES
            if _module(exc) in ("psycopg2", "psycopg"):  # no SQLSTATE: libpq's own (no server, connection lost)
                return True
            return type(exc).__name__ in _PG_OUTAGE_NAMES  # a SQLSTATE's class (psycopg2.errors), made without one
        return False
    if root == "sqlite3":
        return "sqlite3.OperationalError" in names and bool(_SQLITE_OUTAGE.search(_text(exc)))
    if root == "sqlalchemy":
        if "sqlalchemy.exc.DisconnectionError" in names or getattr(exc, "connection_invalidated", False):
            return True
        if names & {"sqlalchemy.exc.OperationalError", "sqlalchemy.exc.InterfaceError"}:
            orig = getattr(exc, "orig", None)
            if isinstance(orig, BaseException) and _module(orig).split(".")[0] in ("psycopg2", "psycopg", "sqlite3"):
                return _outage_kind(orig)  # the driver's error says which kind
            return True  # another driver: its OperationalError is, by DB-API, about the connection
        return False
    if root in ("requests", "urllib3"):
        return any(n.endswith((".ConnectionError", ".NewConnectionError", ".MaxRetryError", ".ProtocolError")) for n in names)
    if isinstance(exc, (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)):
        return True
    if root == "mlflow" and any(n.endswith(".MlflowException") for n in names):
        return bool(_CONNECTION_TEXT.search(_text(exc)))
    return False


_RANK = ((DiskFull, 0), (OutOfMemory, 1), (StoreUnavailable, 2), (TrialFailed, 3))


def _rank(f: Fault) -> int:
    return next((r for cls, r in _RANK if isinstance(f, cls)), len(_RANK))


def classify(exc: BaseException) -> Optional[Fault]:
    """The fault behind ``exc`` (None: a bug, exit 1), looking down its whole chain.

    Where a chain holds several, the one first in this order wins: a full disk (it makes
    stores and writes fail), then memory, then a store outage, then a failed trial. A
    :class:`Fault` already in the chain (raised by the retry, carried through Ray) is
    returned as it is, with what it knows (the store, its URL, how long it was down)."""
    best: Optional[Fault] = None

    def consider(f: Optional[Fault]) -> None:
        nonlocal best
        if f is not None and (best is None or _rank(f) < _rank(best)):
            best = f

    chain = list(_chain(exc))
    for e in chain:  # Faults first: at the same rank they know more than a fresh one
        if isinstance(e, Fault):
            consider(e)
    for e in chain:
        consider(_disk_full(e))
        consider(_out_of_memory(e))
        if not isinstance(e, Fault) and _outage_kind(e):
            consider(StoreUnavailable("", "", 0.0, short_reason(exc)))
    return best


def is_store_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the tracking store is unreachable (and nothing worse): what the
    retry waits out. A :class:`StoreUnavailable` already raised is not retried again (a
    retry around a retry would wait the bound twice)."""
    if any(isinstance(e, Fault) for e in _chain(exc)):
        return False
    return isinstance(classify(exc), StoreUnavailable)


# ------------------------------------------------------------------ the traceback, for the line's reader


def _safe_name(what: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", what).strip("._") or "error"


def write_traceback(logs_dir: Path, exc: BaseException, what: str) -> Optional[Path]:
    """Write ``exc``'s full traceback, its chain included (and a Ray wrapper's ``.cause``), to
    ``logs_dir/<what>-<UTC time>.log`` atomically (a temporary file, then ``os.replace``);
    the path, or None where it cannot be written (a full disk): never raises."""
    tmp: Optional[Path] = None
    try:
        logs_dir = Path(logs_dir)
        now = datetime.datetime.now(datetime.timezone.utc)
        fault = classify(exc)
        text = [f"{what} at {now.isoformat(timespec='seconds')} (pid {os.getpid()})\n"]
        text.append(f"fault: {fault.line()}\n\n" if fault is not None else "fault: none recognised (a bug)\n\n")
        text += traceback.format_exception(type(exc), exc, exc.__traceback__)
        shown = {id(e) for e in _walk_printed(exc)}
        for e in _chain(exc):
            if id(e) not in shown:  # a Ray wrapper's .cause: not in the printed chain
                text.append(f"\nwrapped cause ({type(e).__module__}.{type(e).__name__}):\n")
                text += traceback.format_exception(type(e), e, e.__traceback__)
                shown |= {id(x) for x in _walk_printed(e)}
        logs_dir.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
        path = logs_dir / f"{_safe_name(what)}-{stamp}.log"
        tmp = logs_dir / f".{path.name}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8", errors="replace") as f:
            f.write("".join(text))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        return path
    except Exception:
        return None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass


def _walk_printed(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions ``traceback.format_exception`` prints for ``exc`` (no ``.cause``)."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)


_OOM_TEXT = re.compile(r"out of memory|OutOfMemoryError|\bOOM\b|memory monitor|oom-kill|oom_kill", re.IGNORECASE)


def trial_out_of_memory(text: str) -> bool:
    """Whether a failed trial's error text (a remote traceback, Ray's account of a dead worker)
    says the process ran out of memory: Ray's memory monitor, the kernel's OOM killer as Ray
    reports it (a SIGKILL "due to ... OOM"), CUDA, a ``MemoryError``."""
    return bool(_OOM_TEXT.search(text)) or "MemoryError" in text


_LOGS_DIR: list[Optional[Path]] = [None]


def set_logs_dir(path: Optional[Path]) -> None:
    """Where a fatal error's traceback goes (``<output_dir>/logs``, set by whatever knows the
    output directory: the study runner, ``orchestrate run --output``)."""
    _LOGS_DIR[0] = path


def logs_dir() -> Path:
    """The directory set by :func:`set_logs_dir`, else ``$TMPDIR/orchestrate-logs``."""
    import tempfile  # stdlib; only a fatal error pays for it

    return _LOGS_DIR[0] or Path(tempfile.gettempdir()) / "orchestrate-logs"


def fatal(exc: BaseException, command: str) -> tuple[str, int]:
    """The one line and the exit code for an error nothing else handled: the fault's own line
    (exit 3 for a fault ``--resume`` continues), or, for anything else, a bug (exit 1); the full
    traceback goes to :func:`logs_dir` and the line names the file."""
    fault = classify(exc)
    path = write_traceback(logs_dir(), exc, command)
    where = f" (traceback: {path})" if path else " (the traceback could not be written)"
    if fault is not None:
        return fault.line() + where, fault.exit_code
    return (f"internal error in orchestrate {command}: {short_reason(exc)}; this is a bug: please report it with the "
            f"traceback{where}"), EXIT_BUG


_PATH_IN_TEXT = re.compile(r"No space left on device: '([^']+)'")


def disk_full_in_text(text: str) -> Optional[DiskFull]:
    """A :class:`DiskFull` where a failed trial's error text (a remote traceback) says the disk
    filled (``No space left on device``, a quota), with the path when the text names it."""
    if not text or not _DISK_TEXT.search(text):
        return None
    m = _PATH_IN_TEXT.search(text)
    return DiskFull(m.group(1) if m else "the trial's checkpoint or storage directory")

