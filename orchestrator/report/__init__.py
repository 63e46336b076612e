"""``orchestrate report``: what a study ran and what it found, from its ledger.

Reads ``<output_dir>/results.csv`` (the ledger ``orchestrate study`` writes, through
:class:`orchestrator.ledger.results.ResultsTable`) and the per-run files it names, and writes into
``<output_dir>/report/`` by default, beside what it reads (``--output DIR`` elsewhere, e.g.
the committed ``reports/<study>``):

- ``results.md``: GitHub markdown;
- ``results.tex``: a standalone LaTeX document that ``\\input``s one fragment per table:
  ``results_data.tex`` (data budget), ``results_main.tex`` (scores with majority class and
  chance), ``results_contrasts.tex`` (the study's contrasts over seeds in every regime: difference,
  equivalence, verdicts; Holm), ``results_search.tex`` (search trials by status, selected
  hyperparameters), and the Findings, written from the contrasts;
- ``contrasts.csv``: every contrast as data (Δ, CI, test, p, Holm, TOST, verdict, detectable Δ);
- ``scale.png`` / ``scale.pdf``: metric vs backbone size, one line per method.

Modules: :mod:`.load` (the ledger), :mod:`.labels` (names, colours, formats),
:mod:`.stats` (tests over seeds, equivalence, Holm, intervals, majority/chance),
:mod:`.contrasts` (the declared pairs in every regime, findings), :mod:`.build` (the numbers),
:mod:`.tables` (rows and words), :mod:`.markdown`, :mod:`.latex`, :mod:`.plots`.

Output is deterministic (sorted rows, fixed formats and seeds, no timestamps, figures with
fixed metadata) so reports can be compared with golden files; the provenance footer (package
versions, git commit) comes from the ledger rows and from ``provenance=`` (default: the
versions the runs recorded, :func:`.ledger.recorded`; where none did,
:func:`ptcore.runinfo.versions`, marked "report environment").

Reports you can regenerate (:mod:`.ledger`): ``--with-ledger`` also writes
``<report>/ledger/`` (``results.csv``, ``study.yaml``, the predictions files gzip-compressed,
``provenance.json``) and renders the report from that ledger; ``orchestrate report
reports/<name>`` (a directory with a ``ledger/``) renders it again in place, offline, byte for
byte.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from ptcore.errors import PtcoreError
from ptcore.fileio import write_bytes_atomic

from orchestrator.common import failpoints

from orchestrator.report.build import Report, build_report
from orchestrator.report.contrasts import as_record
from orchestrator.report.latex import render_fragments, render_latex
from orchestrator.report.ledger import LEDGER_DIR, build_provenance, committed_ledger, provenance_record, read_provenance, versions_note, write_ledger
from orchestrator.report.load import StudyResults, load_results
from orchestrator.report.markdown import render_markdown
from orchestrator.report.plots import plot_scale

__all__ = ["Report", "StudyResults", "build_report", "load_results", "render_markdown", "render_latex", "write_report",
           "write_files", "render", "render_fragments", "OUTPUTS",
           "REPORT_DIR", "LEDGER_DIR", "write_ledger", "committed_ledger", "regenerate"]

FIGURES = ("scale.png", "scale.pdf")
REPORT_DIR = "report"  # the default report directory, inside the study's output directory


def render(rep: Report) -> dict[str, bytes]:
    """Every file of the report: ``{name: bytes}``."""
    fragments = render_fragments(rep)
    files = {"results.md": render_markdown(rep).encode(), "results.tex": render_latex(rep, fragments).encode()}
    files.update({name: text.encode() for name, text in fragments.items()})
    files.update({f"scale.{ext}": blob for ext, blob in plot_scale(rep).items()})
    if rep.contrasts:
        files["contrasts.csv"] = contrasts_csv(rep)
    return files


def contrasts_csv(rep: Report) -> bytes:
    import csv
    import io

    records = [as_record(c, rep.settings) for c in rep.contrasts]
    cols = list(dict.fromkeys(k for r in records for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue().encode()


def write_report(
    study: str | os.PathLike,
    out_dir: Optional[str | os.PathLike] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    with_ledger: bool = False,
) -> Path:
    """Write the report files (see the module doc); return the report directory.

    ``study``: a study file (its ``output_dir``, default ``studies_out/<name>``), a study
    output directory holding ``results.csv``, or a committed report directory (one with a
    ``ledger/``: the report is rendered again from it, into that directory unless ``out_dir``).
    ``out_dir`` defaults to ``<output_dir>/report``, wherever the command runs. ``provenance``:
    ``{"versions": {pkg: version}, "git_commit": sha}`` overrides the footer (default: the rows'
    ``git_commit`` and the versions the runs recorded, else :func:`ptcore.runinfo.versions`).
    ``with_ledger``: also write ``<out_dir>/ledger/`` (:mod:`.ledger`) and render the report
    from it, exactly as a later regeneration will.
    """
    if Path(study).name == LEDGER_DIR and committed_ledger(Path(study).parent) is not None:
        study = Path(study).parent  # the ledger itself named: its report, never a report inside the ledger
    committed = committed_ledger(study) if Path(study).is_dir() else None
    if committed is not None:  # a committed report: render it again from its own ledger
        out = Path(out_dir) if out_dir is not None else Path(study)
        if with_ledger:  # elsewhere: take the ledger along (in place, it is already there)
            write_ledger(load_results(committed), out / LEDGER_DIR, read_provenance(committed) or None)
        return regenerate(committed, out)
    path = Path(study)
    if path.is_dir() and not (path / "results.csv").is_file() and (path / "results.md").is_file():
        raise PtcoreError(f"{path}: a report without its ledger (no {LEDGER_DIR}/results.csv), so it cannot be rendered "
                          f"again from here; write it from its study output directory with `orchestrate report "
                          f"<output dir> --output {path} --with-ledger`")
    data = load_results(study)
    out = Path(out_dir) if out_dir is not None else data.output_dir / REPORT_DIR
    if with_ledger:
        return regenerate(write_ledger(data, out / LEDGER_DIR, provenance), out)
    prov = provenance_record(data, provenance)
    rep = build_report(data, {**build_provenance(prov), **(provenance or {})})
    rep.versions_source = versions_note(prov)
    return write_files(rep, out)


def regenerate(ledger: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Render the report of a ledger directory (:mod:`.ledger`) into ``out_dir``: from its
    files alone, never from this environment (package versions from its ``provenance.json``)."""
    ledger = Path(ledger)
    prov = read_provenance(ledger)
    data = load_results(ledger)
    if prov.get("study"):
        data.name = str(prov["study"])
    rep = build_report(data, build_provenance(prov))
    rep.versions_source = versions_note(prov)
    return write_files(rep, Path(out_dir))


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


OUTPUTS = ("results.md", "results.tex", "results_data.tex", "results_main.tex", "results_regimes.tex", "results_contrasts.tex",
           "results_search.tex", "contrasts.csv") + FIGURES
