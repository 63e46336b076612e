"""``orchestrate``: the command line's parser and entry point; each subcommand lives in its own
module of :mod:`orchestrator.cli` and :func:`subcommands` lists them all.

Every user error (:class:`ptcore.errors.PtcoreError`) prints as one line on stderr and
exits with status 2; nothing half-written is left behind (writes are atomic).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from ptcore.errors import PtcoreError

from orchestrator.common.faults import fatal

from orchestrator.cli import bench, collect, env, export, ls, report, run, study, ui, validate
from orchestrator.cli.env import ptcore_version
from orchestrator.cli.subcommand import Subcommand


class UsageError(PtcoreError):
    """Bad command-line arguments: argparse's complaint, on one line like every other error."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written, and an option's default in its help where it has a real one (not
    None/False/empty) and the help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text or d in (None, False, [], argparse.SUPPRESS) or action.option_strings == []:
            return text
        return f"{text} (default: {d})" if text else f"default: {d}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse prints its usage and the error on two lines and exits; ours raises a
    :class:`UsageError` (the usage folded into the message), so :func:`main` prints one
    ``error:`` line and returns 2 like for any other bad input. Subparsers inherit it."""

    def error(self, message: str):
        usage = " ".join(self.format_usage().split())
        raise UsageError(f"{self.prog}: {message}; {usage} (more: {self.prog} --help)")


def subcommands() -> dict[str, Subcommand]:
    """Every subcommand, in the order ``--help`` lists them, each from its module."""
    return {
        "run": run.SUBCOMMAND, "study": study.SUBCOMMAND, "validate": validate.SUBCOMMAND, "ls": ls.SUBCOMMAND,
        "ui": ui.SUBCOMMAND, "report": report.SUBCOMMAND, "collect": collect.SUBCOMMAND, "export": export.SUBCOMMAND,
        "bench": bench.SUBCOMMAND, "env": env.SUBCOMMAND,
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="orchestrate",
        description="Prompt-tuning research at cluster scale: P-Tuning v2, dynamic prompting and fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {ptcore_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in subcommands().items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, epilog=cmd.epilog, formatter_class=HelpFormatter)
        cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
        return subcommands()[args.command].handle(args)
    except PtcoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a fault (store down, disk full, out of memory) or a bug: one line, the traceback to a file
        line, code = fatal(e, argv_command(argv))
        print(f"error: {line}", file=sys.stderr)
        return code


def argv_command(argv: Optional[list[str]]) -> str:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    return words[0] if words else "orchestrate"


if __name__ == "__main__":
    sys.exit(main())
