"""A private PostgreSQL server for tests that stop and restart it (a helper, not a test file).

The shared test server (127.0.0.1:5432, ``orch_study_helpers.pg_server``) must never be
stopped: other tests use it. A test of an outage runs its own::

    ok, why = available()
    if not ok:
        pytest.skip(why)
    with PrivatePostgres() as pg:
        url = pg.url("optuna")       # postgresql://postgres@127.0.0.1:<port>/optuna, created
        thread = pg.outage(3)        # down now, up again 3 s later (in a thread)
        ...

``initdb`` and ``postgres`` refuse to run as root: as root, they run as the ``postgres`` OS
user (``runuser``), in a temporary directory given to it. The server listens on 127.0.0.1
on a free port only (its Unix socket in that directory, not ``/var/run/postgresql``), with
trust authentication and no fsync (a test's data need not survive a power cut). Leaving the
``with`` block (or the process exiting) stops it and removes the directory.
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

TOOLS = ("initdb", "pg_ctl", "postgres")
PG_BIN_ENV = "PG_BIN"
OS_USER = "postgres"


def _version(path: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", path)) or (0,)


def find_bin() -> Optional[Path]:
    """The directory holding initdb, pg_ctl and postgres: ``$PG_BIN``, else the newest
    ``/usr/lib/postgresql/*/bin`` (Debian keeps them off ``PATH``), else ``PATH``."""
    env = os.environ.get(PG_BIN_ENV)
    if env:
        candidates = [env]
    else:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if all(os.access(Path(c) / t, os.X_OK) for t in TOOLS):
            return Path(c)
    return None


def _runuser() -> Optional[str]:
    return shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None)


def available() -> tuple[bool, str]:
    """(whether a private server can run here, why not)."""
    if importlib.util.find_spec("psycopg2") is None:
        return False, "psycopg2 is not installed: pip install -e '.[test]'"
    if find_bin() is None:
        where = os.environ.get(PG_BIN_ENV) or "/usr/lib/postgresql/*/bin or PATH"
        return False, f"no PostgreSQL server binaries ({', '.join(TOOLS)}) in {where}; install them or set {PG_BIN_ENV}"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return False, f"running as root and there is no {OS_USER!r} OS user for PostgreSQL to run as"
        if _runuser() is None:
            return False, "running as root and there is no runuser to run PostgreSQL as another user"
    return True, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL server of this test's own: ``start``/``stop``/``outage`` at will."""

    def __init__(self, bin_dir: Optional[Path] = None, port: Optional[int] = None):
        self.bin = Path(bin_dir) if bin_dir else find_bin()
        if self.bin is None:
            raise RuntimeError(available()[1])
        self.port = port
        self.root: Optional[Path] = None
        self.running = False
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._made: set[str] = set()

    # ------------------------------------------------------------------ plumbing

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def _run(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = [_runuser(), "-u", OS_USER, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGPORT / PGDATA of ours leaking in
        env.update(LC_ALL="C", LANG="C")
        proc = subprocess.run(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.root and self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:1])} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}\n{tail}")
        return proc

    def _init(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ptcore-pg-"))
        os.chmod(self.root, 0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, OS_USER, OS_USER)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync", "--no-instructions")
        atexit.register(self.close)

    # ------------------------------------------------------------------ the server

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it accepts connections."""
        with self._lock:
            if self.running:
                return
            if self.root is None:
                self._init()
            tries = 1 if self.port else 3  # a free port picked may be taken before the server binds it
            for i in range(tries):
                port = self.port or free_port()
                opts = (f"-p {port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c synchronous_commit=off "
                        f"-c full_page_writes=off -c max_connections=40 -c shared_buffers=16MB")
                proc = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts, "start",
                                 check=i == tries - 1)
                if proc.returncode == 0:
                    self.port = port
                    self.running = True
                    return

    def stop(self) -> None:
        """Stop the server: a fast shutdown (clients are disconnected), waiting until it is down."""
        with self._lock:
            if not self.running:
                return
            proc = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)
            if proc.returncode != 0:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", check=False)
            self.running = False

    def outage(self, seconds: float) -> threading.Thread:
        """Stop the server now and start it again ``seconds`` later, in a background thread
        (returned: join it to wait for the restart). Leaving the ``with`` cancels a pending restart."""
        self.stop()

        def later() -> None:
            if not self._cancel.wait(seconds):
                self.start()

        thread = threading.Thread(target=later, name=f"pg-outage-{seconds}s", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    # ------------------------------------------------------------------ databases

    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<dbname>``, the database created if new."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", dbname):
            raise ValueError(f"{dbname!r}: use lowercase letters, digits and _")
        if dbname not in self._made and dbname != "postgres":
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=10)
            try:
                conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{dbname}"')
            finally:
                conn.close()
            self._made.add(dbname)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Cancel a pending restart, stop the server, remove its directory."""
        self._cancel.set()
        for t in self._threads:
            t.join(timeout=90)
        try:
            self.stop()
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
            atexit.unregister(self.close)

    def __enter__(self) -> "PrivatePostgres":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
