"""What a subcommand of ``orchestrate`` is: its one-line help, the function that adds its
arguments, the one that runs it and, optionally, an epilog for its ``--help`` (examples). Each
subcommand's module in :mod:`orchestrator.cli` defines ``SUBCOMMAND`` with this;
:func:`orchestrator.cli.app.subcommands` imports them by name, so the CLI's table of
subcommands is written out in one place and no module imports the CLI back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace], int]
    epilog: Optional[str] = None  # shown as written after the options in its --help
