"""``orchestrate validate FILE...``: check study files (schema, tasks, methods, search keys and
ranges, every task's data files) without running them; one ``ok:`` line per file."""

from __future__ import annotations

import argparse

from orchestrator.cli.subcommand import Subcommand
from orchestrator.study import load_study
from orchestrator.study.preflight import preflight


def add_validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="+", help="study file(s)")


def handle_validate(args: argparse.Namespace) -> int:
    for f in args.file:
        ls = load_study(f)
        data, notes = preflight(ls)
        plan = ls.plan()
        print(
            f"ok: {f}: study {ls.name!r}, {plan['cells']} cells, {plan['search_trials']} search trials, "
            f"{plan['final_runs']} final runs, output {plan['output_dir']}; data: {'; '.join(data)}"
            + "".join(f"; warning: {n}" for n in notes)
        )
    return 0


SUBCOMMAND = Subcommand(
    "check a study file (schema, tasks, methods, search keys and ranges, every task's data files) without running it",
    add_validate_args, handle_validate,
)
