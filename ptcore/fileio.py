"""Atomic file writes (temp file in the target's directory + rename) that respect the umask.

Every output file (``result.json``, checkpoints, ``results.csv``, predictions, reports, the
tokenized-data cache) goes through :func:`atomic_write`, so a crash or ``kill -9`` never
leaves half a file, an error while writing leaves no stray temp file, and the file gets
the mode any other new file would get: ``0o666 & ~umask`` (0644 under the usual umask 022,
0664 under 002: colleagues in the group can read the results). ``tempfile.mkstemp`` would
create 0600 files instead.

The temp file is created with ``os.open(..., 0o666)``: the kernel applies the process umask
(and a directory's default ACL) itself, so the umask is never read or changed here, which
would race with other threads. Standard library only: ptcore's readers and the orchestrator
import this without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any, Iterator, Optional

NEW_FILE_MODE = 0o666  # before the umask, like open(path, "w")


def _create_temp(path: Path, binary: bool) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | (getattr(os, "O_BINARY", 0) if binary else 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temp file name for {path.name}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, newline: Optional[str] = None, encoding: Optional[str] = None) -> Iterator[IO]:
    """``with atomic_write(path) as f: ...``: ``f`` writes a temp file beside ``path`` that
    replaces ``path`` when the block ends without an error (else it is removed). ``mode``:
    ``"w"`` (text) or ``"wb"``. The parent directory is created if missing."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, binary=mode == "wb")
    try:
        try:
            f = os.fdopen(fd, "wb") if mode == "wb" else os.fdopen(fd, "w", newline=newline, encoding=encoding)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that take a file name (``safetensors.torch.save_file``): ``with
    atomic_path(path) as tmp: writer(tmp)``. ``tmp`` replaces ``path`` when the block ends
    without an error (else it is removed), with the mode a new file gets under the umask even
    if the writer made its own file there (safetensors writes a private temp file, mode 0600,
    and renames it onto ``tmp``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, binary=True)
    try:
        want = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 as the kernel applied the umask
    finally:
        os.close(fd)
    try:
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != want:
            os.chmod(tmp, want)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: Optional[str] = None) -> None:
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: Optional[int] = 2) -> None:
    """JSON via :func:`atomic_write`. ``indent=None``: compact, for large files."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, separators=None if indent is not None else (",", ":"), default=str)
