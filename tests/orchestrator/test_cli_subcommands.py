"""The CLI's subcommands: one explicit table, and no module importing the CLI back."""

from __future__ import annotations

import subprocess
import sys

from orchestrator.cli import app as cli


def test_every_subcommand_in_one_table():
    table = cli.subcommands()
    assert list(table) == ["run", "study", "validate", "ls", "ui", "report", "collect", "export", "bench", "env"]
    parser = cli.build_parser()
    needs = {"ls": ["tasks"], "study": ["x.yaml"], "validate": ["x.yaml"], "ui": ["x.yaml"], "report": ["x"], "collect": ["x"],
             "export": ["x", "--output", "y"]}
    for name, cmd in table.items():
        assert parser.parse_args([name, *needs.get(name, [])]).command == name  # each parses its own arguments
        assert callable(cmd.handle) and cmd.help


def test_report_and_bench_do_not_import_the_cli():
    code = (
        "import sys, orchestrator.report, orchestrator.bench, orchestrator.execution.runner; "
        "print(any(m.startswith('orchestrator.cli') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
