"""``orchestrate report``: what a study ran and what it found, from its ledger.

Reads ``<output_dir>/results.csv`` (the ledger ``orchestrate study`` writes, through
:class:`orchestrator.results.ResultsTable`) and the per-run files it names, and writes into
``<output_dir>/report/`` by default, beside what it reads (``--output DIR`` elsewhere, e.g.
the committed ``reports/<study>``):

- ``results.md``: GitHub markdown;
- ``results.tex``: a standalone LaTeX document that ``\\input``s one fragment per table:
  ``results_data.tex`` (data budget), ``results_main.tex`` (scores with majority class and
  chance), ``results_tests.tex`` (paired bootstrap vs fine-tuning, Holm-corrected),
  ``results_search.tex`` (search trials by status, selected hyperparameters);
- ``scale.png`` / ``scale.pdf``: metric vs backbone size, one line per method.

Modules: :mod:`.load` (the ledger), :mod:`.labels` (names, colours, formats),
:mod:`.stats` (bootstrap, Holm, majority/chance), :mod:`.build` (the numbers),
:mod:`.tables` (rows and words), :mod:`.markdown`, :mod:`.latex`, :mod:`.plots`.

Output is deterministic (sorted rows, fixed formats and seeds, no timestamps) so reports can
be compared with golden files; the provenance footer (package versions, git commit) comes
from the ledger rows and from ``provenance=`` (default: :func:`ptcore.runinfo.versions`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from ptcore.fileio import write_bytes_atomic

from .. import failpoints
from ..subcommand import Subcommand

from .build import Report, build_report
from .latex import render_fragments, render_latex
from .load import StudyResults, load_study
from .markdown import render_markdown

__all__ = ["Report", "StudyResults", "build_report", "load_study", "render_markdown", "render_latex", "write_report",
           "write_files", "render", "render_fragments", "add_report_args", "handle_report", "SUBCOMMAND", "OUTPUTS",
           "REPORT_DIR"]

FIGURES = ("scale.png", "scale.pdf")
REPORT_DIR = "report"  # the default report directory, inside the study's output directory


def render(rep: Report) -> dict[str, bytes]:
    """Every file of the report: ``{name: bytes}``."""
    from .plots import plot_scale

    fragments = render_fragments(rep)
    files = {"results.md": render_markdown(rep).encode(), "results.tex": render_latex(rep, fragments).encode()}
    files.update({name: text.encode() for name, text in fragments.items()})
    files.update({f"scale.{ext}": blob for ext, blob in plot_scale(rep).items()})
    return files


def write_report(
    study: str | os.PathLike,
    out_dir: Optional[str | os.PathLike] = None,
    provenance: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write the report files (see the module doc); return the report directory.

    ``study``: a study file (its ``output_dir``, default ``studies_out/<name>``) or a study
    output directory holding ``results.csv``. ``out_dir`` defaults to ``<output_dir>/report``,
    wherever the command runs. ``provenance``: ``{"versions": {pkg: version},
    "git_commit": sha}`` overrides the footer (default: the rows' ``git_commit`` and
    :func:`ptcore.runinfo.versions`).
    """
    data = load_study(study)
    rep = build_report(data, provenance)
    return write_files(rep, Path(out_dir) if out_dir is not None else data.output_dir / REPORT_DIR)


def write_files(rep: Report, out: Path) -> Path:
    """Render ``rep`` into ``out`` (each file atomically; fragments of tables it lacks removed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = render(rep)
    for stale in OUTPUTS:
        if stale not in files and (out / stale).is_file():  # a table this study no longer has
            (out / stale).unlink()
    for i, name in enumerate(sorted(files)):
        write_bytes_atomic(out / name, files[name])  # atomic: a reader never sees half a file
        if i == 0:
            failpoints.hit("report.mid")
    return out


OUTPUTS = ("results.md", "results.tex", "results_data.tex", "results_main.tex", "results_regimes.tex", "results_tests.tex",
           "results_search.tex") + FIGURES


# ------------------------------------------------------------------ CLI


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study file (yaml) or study output directory (with results.csv)")
    p.add_argument("--output", "--out", dest="out", default=None,
                   help=f"report directory (default: <the study's output_dir>/{REPORT_DIR}, beside its results.csv; "
                        f"--out: the older spelling)")


def handle_report(args: argparse.Namespace) -> int:
    out = write_report(args.study, args.out)
    for name in OUTPUTS:
        if (out / name).is_file():
            print(out / name)
    return 0


SUBCOMMAND = Subcommand(
    "what a study ran and found: data budget, results vs fine-tuning, majority/chance, paired bootstrap tests, "
    "search summary (markdown, LaTeX) and a scale plot",
    add_report_args, handle_report,
)
