"""``orchestrate report``: render a study's report (markdown, LaTeX, figures), optionally with
its ledger, or regenerate a committed report from its ledger."""

from __future__ import annotations

import argparse

from orchestrator.cli.subcommand import Subcommand
from orchestrator.report import LEDGER_DIR, OUTPUTS, REPORT_DIR, committed_ledger, write_report


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study file (yaml), study output directory (with results.csv), or a committed report "
                                 f"directory (with {LEDGER_DIR}/: rendered again in place from it)")
    p.add_argument("--output", "--out", dest="out", default=None,
                   help=f"report directory (default: <the study's output_dir>/{REPORT_DIR}, beside its results.csv; "
                        f"for a committed report, that directory; --out: the older spelling)")
    p.add_argument("--with-ledger", action="store_true",
                   help=f"also write what the report reads into <report>/{LEDGER_DIR}/ (results.csv, study.yaml, the "
                        f"predictions files gzip-compressed, provenance.json; no checkpoints or databases) so that "
                        f"`orchestrate report <report>` regenerates it byte for byte")


def handle_report(args: argparse.Namespace) -> int:
    out = write_report(args.study, args.out, with_ledger=args.with_ledger)
    for name in OUTPUTS:
        if (out / name).is_file():
            print(out / name)
    if (out / LEDGER_DIR).is_dir() and (args.with_ledger or committed_ledger(args.study) is not None):
        print(out / LEDGER_DIR)
    return 0


SUBCOMMAND = Subcommand(
    "what a study ran and found: data budget, results vs fine-tuning, majority/chance, paired bootstrap tests, "
    "search summary (markdown, LaTeX) and a scale plot",
    add_report_args, handle_report,
)
