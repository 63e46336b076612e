"""Filesystem helpers every room may use (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file), symlinks not followed."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
