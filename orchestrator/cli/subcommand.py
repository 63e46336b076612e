"""What a subcommand of ``orchestrate`` is: its one-line help, the function that adds its
arguments and the one that runs it. Each module that has one defines ``SUBCOMMAND`` (or
several) with this; :func:`orchestrator.cli.app.subcommands` imports them by name, so the CLI's
table of subcommands is written out in one place and no module imports the CLI back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handle: Callable[[argparse.Namespace], int]
