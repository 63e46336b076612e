"""Servers the CLI starts (``orchestrate ui``): the port checked before anything starts, and
the server's whole process tree stopped with the command.

* :func:`check_port` raises a one-line :class:`~ptcore.errors.PtcoreError` (exit 2) when the
  server could not listen on ``host:port`` (in use, no such address, privileged port),
  naming a free port to pass instead.
* :func:`run_process_tree` runs a command in its own session (process group), so a terminal's
  Ctrl-C reaches only us; SIGINT or SIGTERM of this process stops the whole tree: SIGTERM to
  the group and to every descendant that left it (``mlflow ui`` starts ~15 processes:
  uvicorn and its workers, a job runner and its huey consumers, jobs in sessions of their
  own), a grace period, then SIGKILL for what is left. If this process is killed outright
  (``kill -9``), the kernel sends the server SIGTERM (Linux ``PR_SET_PDEATHSIG``), and
  ``mlflow ui`` stops its own tree on SIGTERM.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

from ptcore.errors import PtcoreError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 10.0  # from SIGTERM to SIGKILL (mlflow ui's tree takes ~5 s to stop on its own)


# ------------------------------------------------------------------ ports


def _bind_error(host: str, port: int) -> Optional[OSError]:
    """Bind ``host:port`` as a server would (SO_REUSEADDR: a port in TIME_WAIT counts as free;
    IPv6 for a host with ':', as uvicorn does); the error, or None if it could."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as e:
        return OSError(errno.EADDRNOTAVAIL, e.strerror)
    fam, kind, proto, _, addr = infos[0]
    with socket.socket(fam, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            return e
    return None


def free_port(host: str, near: int) -> Optional[int]:
    """A port a server could listen on now: the first free one above ``near``, else any."""
    for port in range(near + 1, min(near + 50, 65535) + 1):
        if _bind_error(host, port) is None:
            return port
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    except OSError:
        return None


def check_port(host: str, port: int, what: str = "the server") -> None:
    """Raise a one-line PtcoreError if ``what`` could not listen on ``host:port``."""
    if not 0 < port < 65536:
        raise PtcoreError(f"--port {port}: a port is 1-65535 (e.g. --port 5000)")
    err = _bind_error(host, port)
    if err is None:
        return
    other = free_port(host, port)
    hint = f"--port {other}" if other else "--port N with a free port N"
    if err.errno == errno.EADDRINUSE:
        raise PtcoreError(f"port {port} on {host} is already in use (another `orchestrate ui` or server?); "
                          f"start {what} on a free port: {hint}")
    if err.errno == errno.EACCES:
        raise PtcoreError(f"port {port} on {host} needs privileges; use a port from 1024 up: {hint}")
    if err.errno == errno.EADDRNOTAVAIL:
        raise PtcoreError(f"--host {host}: not an address of this machine ({err.strerror}); "
                          f"use one of its addresses, e.g. 127.0.0.1 (the default) or 0.0.0.0 (every interface)")
    raise PtcoreError(f"cannot listen on {host}:{port}: {err.strerror}")


# ------------------------------------------------------------------ process trees


def _psutil():
    try:
        import psutil
    except ImportError:  # pragma: no cover - installed with ray[default]
        return None
    return psutil


def _alive(p) -> bool:
    psutil = _psutil()
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tree(pid: int) -> list:
    """The process ``pid`` and its descendants (psutil), those alive now."""
    psutil = _psutil()
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def _group(pgid: int) -> list:
    """The live (not zombie) processes of process group ``pgid``."""
    psutil = _psutil()
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (OSError, psutil.Error):
            continue
    return out


def _signal(procs: Sequence, pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:  # descendants that left the group (new sessions) are signalled one by one
        try:
            if os.getpgid(p.pid) != pgid:
                p.send_signal(sig)
        except Exception:  # ProcessLookupError, psutil.NoSuchProcess / AccessDenied: gone or not ours
            pass


def stop_tree(proc: subprocess.Popen, grace_s: float = GRACE_S, hurry: Callable[[], bool] = lambda: False) -> None:
    """Stop ``proc`` (a session leader, see :func:`run_process_tree`) and every process below
    it: SIGTERM to its group and its descendants, wait up to ``grace_s`` (cut short when
    ``hurry()`` turns true: a second Ctrl-C), SIGKILL what is left; reaps ``proc``."""
    pgid = proc.pid
    psutil = _psutil()
    if psutil is None:  # pragma: no cover - the process group only
        _signal([], pgid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        _signal([], pgid, signal.SIGKILL)
        proc.wait()
        return
    tracked = {p.pid: p for p in _tree(proc.pid) + _group(pgid)}  # before any signal: orphans lose their parent link
    if proc.poll() is None or any(_alive(p) for p in tracked.values()):
        _signal(list(tracked.values()), pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        proc.poll()
        for p in list(tracked.values()):  # processes started while stopping (a respawned worker)
            if _alive(p):
                tracked.update((c.pid, c) for c in _tree(p.pid))
        tracked.update((p.pid, p) for p in _group(pgid))
        alive = [p for p in tracked.values() if _alive(p)]
        if not alive or time.monotonic() > deadline or hurry():
            break
        time.sleep(0.1)
    if alive:
        _signal(alive, pgid, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
    proc.wait()


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _child_setup(parent: int, prctl: Any) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGTERM when this process dies
            if os.getppid() != parent:  # it died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover
        return None


def run_process_tree(cmd: Sequence[str], grace_s: float = GRACE_S, env: Optional[dict[str, str]] = None) -> tuple[int, Optional[int]]:
    """Run ``cmd`` (in ``env``: default this process's environment) in a session of its own
    until it exits or this process gets SIGINT or SIGTERM; either way nothing of its tree is
    left running when this returns.

    Returns ``(returncode, signum)``: ``signum`` is the signal that stopped it (None: the
    command exited by itself with ``returncode``)."""
    hurried = []
    stopped: Optional[int] = None
    proc: Optional[subprocess.Popen] = None

    def on_signal(signum, frame):
        raise _Stop(signum)

    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        # blocked while starting: a signal now is taken once `proc` is known (the child unblocks them)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc = subprocess.Popen(list(cmd), env=env, start_new_session=True, preexec_fn=_child_setup(os.getpid(), _prctl()))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        proc.wait()
    except _Stop as e:
        stopped = e.signum
    finally:
        for s in STOP_SIGNALS:  # while stopping, another Ctrl-C / SIGTERM cuts the grace period short
            signal.signal(s, lambda signum, frame: hurried.append(signum))
        try:
            if proc is not None:
                stop_tree(proc, grace_s, hurry=lambda: bool(hurried))
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    return (proc.returncode if proc is not None else 1), stopped
