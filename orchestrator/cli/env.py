"""``orchestrate env``: print what a bug report needs (versions, git commit, devices, data
directory). Also :func:`ptcore_version`, which ``orchestrate --version`` prints."""

from __future__ import annotations

import argparse
import os
import platform
from importlib import metadata

from ptcore import runinfo

from orchestrator.cli.subcommand import Subcommand


def ptcore_version() -> str:
    try:
        return metadata.version("ptcore")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "unknown (not installed)"


def handle_env(args: argparse.Namespace) -> int:
    """What a bug report needs: versions, git commit, devices, data directory."""
    git = runinfo.git_info()
    lines = [f"ptcore {ptcore_version()}  (git {git.get('commit') or '-'}{' dirty' if git.get('dirty') else ''})",
             f"platform {platform.platform()}  cpus {os.cpu_count()}"]
    lines += [f"{k:14s} {v}" for k, v in runinfo.versions().items()]
    try:
        import torch  # deferred for startup time (seconds), and a broken install is reported, not raised

        cuda = f"cuda {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no CUDA device"
        lines.append(f"{'devices':14s} {cuda}; torch threads {torch.get_num_threads()}")
    except Exception as e:  # pragma: no cover - broken torch: say so, it is what the report needs
        lines.append(f"{'devices':14s} torch failed to load: {e}")
    data = os.environ.get("PTCORE_DATA_DIR")
    lines.append(f"{'data dir':14s} {data + ' ($PTCORE_DATA_DIR)' if data else 'unset ($PTCORE_DATA_DIR): tasks load from the hub'}")
    lines.append(f"{'hub':14s} {'offline (HF_HUB_OFFLINE)' if os.environ.get('HF_HUB_OFFLINE') == '1' else 'online'}")
    print("\n".join(lines))
    return 0


SUBCOMMAND = Subcommand(
    "print versions, git commit, devices and data directory (for bug reports)", lambda p: None, handle_env,
)
