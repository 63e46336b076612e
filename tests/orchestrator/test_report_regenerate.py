"""Reports you can regenerate: ``orchestrate report STUDY --output reports/NAME --with-ledger``
writes the ledger beside the report (``reports/NAME/ledger/``), and ``orchestrate report
reports/NAME`` renders the report again from it, offline and byte for byte.

- every committed report with a ``ledger/`` (``reports/*/ledger``) regenerates to the bytes
  committed (skipped, saying so, while no committed report has a ledger);
- on a synthetic study (the ``with_predictions`` report fixture, with runs that recorded their
  package versions in ``mlartifacts/`` and ``mlflow.db``, and the files a ledger must leave out):
  the ledger's contents, regeneration in place in this process (with other package versions
  installed, as far as the report can tell) and in another process (another hash seed), the
  gzip-compressed predictions the loader reads, and a report without a ledger.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import app as cli
from orchestrator.report import LEDGER_DIR, OUTPUTS, load_results, regenerate, write_report
from orchestrator.report.ledger import recorded, write_ledger
from ptcore.errors import PtcoreError

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "reports"
FIXTURE = ROOT / "tests" / "fixtures" / "report" / "with_predictions"
RUN_VERSIONS = {"python": "3.10.4", "ptcore": "0.0.9", "torch": "2.1.0", "numpy": "1.26.4"}


# ------------------------------------------------------------------ comparing reports


def first_difference(expected: Path, actual: Path, names: list[str]) -> str | None:
    """The first of ``names`` whose bytes differ between two report directories, with the first
    differing line (text) or byte offset (figures); None when all are equal."""
    for name in sorted(names):
        want, got = expected / name, actual / name
        if not want.is_file():
            return f"{name}: regeneration writes it, the committed report lacks it"
        a, b = want.read_bytes(), got.read_bytes()
        if a == b:
            continue
        if name.endswith((".md", ".tex")):
            la, lb = a.decode(errors="replace").splitlines(), b.decode(errors="replace").splitlines()
            for i, (x, y) in enumerate(zip(la, lb), 1):
                if x != y:
                    return f"{name}, line {i}:\n  committed:   {x!r}\n  regenerated: {y!r}"
            return f"{name}: line {min(len(la), len(lb)) + 1}: one has {len(la)} lines, the other {len(lb)}"
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return (f"{name}: bytes differ from offset {at} ({len(a)} bytes committed, {len(b)} regenerated): "
                f"committed {a[max(0, at - 20):at + 40]!r} / regenerated {b[max(0, at - 20):at + 40]!r}")
    return None


def _generated(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_file())


# ------------------------------------------------------------------ the committed reports


COMMITTED = sorted(p.parent for p in REPORTS.glob(f"*/{LEDGER_DIR}") if p.is_dir())


@pytest.mark.skipif(not COMMITTED, reason=f"no committed report has a ledger yet (no {REPORTS.name}/*/{LEDGER_DIR}/); "
                                          f"write one with `orchestrate report <output dir> --output reports/<name> --with-ledger`")
@pytest.mark.parametrize("report_dir", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_report_regenerates_byte_for_byte(report_dir, tmp_path):
    """Every file byte for byte; where matplotlib or numpy differ from the versions that rendered
    the committed report (its provenance.json), the figures' bytes cannot be the same and only
    their presence is checked (the text, tables and contrasts still must match)."""
    from orchestrator.report.ledger import read_provenance, rendering_versions

    out = regenerate(report_dir / LEDGER_DIR, tmp_path / report_dir.name)
    names = _generated(out)
    rendered = read_provenance(report_dir / LEDGER_DIR).get("rendered_with")
    if rendered is not None and rendered != rendering_versions():
        figures = [n for n in names if n.endswith((".png", ".pdf"))]
        assert all((report_dir / n).is_file() for n in figures)
        names = [n for n in names if n not in figures]
    diff = first_difference(report_dir, out, names)
    assert diff is None, (f"{report_dir.relative_to(ROOT)} does not regenerate from its ledger: {diff}\n"
                          f"(`orchestrate report {report_dir.relative_to(ROOT)}` rewrites it; commit the result if the "
                          f"change is intended)")
    stale = sorted(n for n in OUTPUTS if (report_dir / n).is_file() and n not in names)
    assert not stale, f"{report_dir.relative_to(ROOT)}: {stale} committed but no longer generated from the ledger"


@pytest.mark.skipif(not COMMITTED, reason="no committed report has a ledger yet")
@pytest.mark.parametrize("report_dir", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_report_latex_fits_the_page(report_dir, tmp_path):
    """The committed reports' LaTeX compiles with no table wider than the page (the regimes report
    is the one with several regimes, which the report fixtures lack)."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended lmodern)")
    out = tmp_path / report_dir.name
    shutil.copytree(report_dir, out, ignore=shutil.ignore_patterns(LEDGER_DIR))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "results.tex"],
                          cwd=out, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{report_dir.name}: pdflatex failed:\n{proc.stdout[-3000:]}"
    log = (out / "results.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, f"{report_dir.name}: a table is wider than the page"


# ------------------------------------------------------------------ a synthetic study


def _study_dir(root: Path) -> Path:
    """The with_predictions fixture as a study output directory whose final runs recorded their
    versions (result.json in mlartifacts/, tags in mlflow.db), plus what a ledger leaves out."""
    src = root / "studies_out" / "with_predictions"
    shutil.copytree(FIXTURE, src)
    with open(src / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    finals = [r for r in rows if r["phase"] == "final" and r["status"] == "ok"]
    for i, r in enumerate(finals):
        r["mlflow_run_id"] = f"{i:04d}abcdef"
    with open(src / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for i, r in enumerate(finals[:-2]):  # result.json for all but two runs (one of them with another torch)
        art = src / "mlartifacts" / r["mlflow_run_id"] / "artifacts"
        (art / "checkpoint").mkdir(parents=True)
        (art / "checkpoint" / "trainable.safetensors").write_bytes(b"weights")
        versions = dict(RUN_VERSIONS, torch="2.1.1") if i == 0 else RUN_VERSIONS
        (art / "result.json").write_text(json.dumps({"versions": versions, "git": {"commit": "c0ffee", "dirty": False}}))
    con = sqlite3.connect(src / "mlflow.db")  # the other two: only their MLflow tags
    con.execute("CREATE TABLE tags (key TEXT, value TEXT, run_uuid TEXT)")
    for r in finals[-2:]:
        con.executemany("INSERT INTO tags VALUES (?, ?, ?)",
                        [(f"ptcore.version.{k}", v, r["mlflow_run_id"]) for k, v in RUN_VERSIONS.items()]
                        + [("ptcore.version.peft", "0.10.0", r["mlflow_run_id"])])
    con.commit()
    con.close()
    (src / "optuna.db").write_bytes(b"optuna")
    (src / "ray").mkdir()
    (src / "ray" / "experiment_state.json").write_text("{}")
    return src


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """(study output dir, report dir) after `orchestrate report SRC --output DIR --with-ledger`."""
    root = tmp_path_factory.mktemp("regen")
    src = _study_dir(root)
    out = root / "reports" / "with_predictions"
    assert cli.main(["report", str(src), "--output", str(out), "--with-ledger"]) == 0
    return src, out


def test_ledger_holds_what_the_report_reads_and_nothing_else(written):
    src, out = written
    ledger = out / LEDGER_DIR
    files = sorted(str(p.relative_to(ledger)) for p in ledger.rglob("*") if p.is_file())
    rels = sorted({r["predictions"] for r in load_results(src).rows if r["predictions"]})
    assert len(rels) == 70
    assert files == sorted(["results.csv", "study.yaml", "provenance.json"] + [f"{r}.gz" for r in rels])
    assert (ledger / "results.csv").read_bytes() == (src / "results.csv").read_bytes()  # `predictions` values as they were
    assert (ledger / "study.yaml").read_bytes() == (src / "study.yaml").read_bytes()
    for rel in rels:
        blob = (ledger / f"{rel}.gz").read_bytes()
        assert blob[4:8] == b"\0\0\0\0" and not blob[3] & 0x08  # gzip mtime 0, no file name in the header
        assert gzip.decompress(blob) == (src / rel).read_bytes()
    prov = json.loads((ledger / "provenance.json").read_text())
    assert prov["study"] == "with_predictions" and prov["versions_from"] == "runs"
    # the runs' versions (result.json, else their MLflow tags), python first; two torch builds among the runs
    assert prov["versions"] == {"python": "3.10.4", "ptcore": "0.0.9", "torch": "2.1.0 / 2.1.1", "peft": "0.10.0",
                                "numpy": "1.26.4"}
    assert prov["git_commits"] == ["9a8b7c6d5e4f30211203948576a5b4c3d2e1f000", "c0ffee"]
    footer = (out / "results.md").read_text().rstrip().splitlines()[-1]
    assert "Package versions: python 3.10.4, ptcore 0.0.9, torch 2.1.0 / 2.1.1," in footer, footer


def test_ledger_report_is_the_study_report(written, tmp_path):
    """The report written from the ledger is the one written straight from the study output
    directory (the ledger carries everything the report reads, the runs' versions included)."""
    src, out = written
    direct = write_report(src, tmp_path / "direct")
    names = _generated(out)
    assert _generated(direct) == names
    diff = first_difference(out, direct, names)
    assert diff is None, diff


def test_regenerated_in_place_byte_for_byte_whatever_is_installed(written, tmp_path, monkeypatch, capsys):
    """`orchestrate report reports/NAME` from the ledger alone: no study output dir, no MLflow,
    other package versions in this environment: the same bytes."""
    src, out = written
    copy = tmp_path / "with_predictions"
    shutil.copytree(out, copy)
    import ptcore.runinfo

    monkeypatch.setattr(ptcore.runinfo, "versions", lambda: {"python": "9.9.9", "torch": "99.0"})
    assert cli.main(["report", str(copy)]) == 0
    printed = capsys.readouterr().out
    assert str(copy / "results.md") in printed
    assert cli.main(["report", str(copy / LEDGER_DIR)]) == 0  # the ledger named: the same, in the report directory
    assert not (copy / LEDGER_DIR / "report").exists()
    names = _generated(out)
    assert set(names) >= {"results.md", "results.tex", "results_contrasts.tex", "scale.png", "scale.pdf"}
    assert _generated(copy) == names
    diff = first_difference(out, copy, names)
    assert diff is None, diff
    assert (copy / LEDGER_DIR / "results.csv").read_bytes() == (out / LEDGER_DIR / "results.csv").read_bytes()


def test_generated_twice_in_separate_processes_is_byte_identical(written, tmp_path):
    """Another interpreter (another hash seed, another time): the same bytes, figures included."""
    _, out = written
    copy = tmp_path / "again"
    shutil.copytree(out / LEDGER_DIR, copy / LEDGER_DIR)
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])  # this checkout's orchestrator
    env = dict(os.environ, PYTHONHASHSEED="12345", TZ="Asia/Kolkata", PYTHONPATH=path)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(copy)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = _generated(out)
    assert _generated(copy) == names
    diff = first_difference(out, copy, names)
    assert diff is None, diff


def test_ledger_written_twice_is_byte_identical_and_loses_stale_files(written, tmp_path):
    src, out = written
    ledger = tmp_path / "ledger"
    write_ledger(load_results(src), ledger)
    (ledger / "predictions" / "old-run.json.gz").write_bytes(b"stale")
    (ledger / "notes.txt").write_text("stale")
    write_ledger(load_results(src), ledger)
    mine = {str(p.relative_to(ledger)): p.read_bytes() for p in ledger.rglob("*") if p.is_file()}
    theirs = {str(p.relative_to(out / LEDGER_DIR)): p.read_bytes() for p in (out / LEDGER_DIR).rglob("*") if p.is_file()}
    assert mine == theirs


def test_ledger_taken_elsewhere_from_a_committed_report(written, tmp_path):
    """`orchestrate report reports/NAME --output OTHER --with-ledger`: the ledger goes along
    unchanged (its provenance included), and the report is the same."""
    _, out = written
    other = write_report(out, tmp_path / "other", with_ledger=True)
    names = _generated(out)
    assert first_difference(out, other, names) is None
    for p in (out / LEDGER_DIR).rglob("*"):
        if p.is_file():
            assert (other / LEDGER_DIR / p.relative_to(out / LEDGER_DIR)).read_bytes() == p.read_bytes(), p


def test_loader_reads_gzip_predictions(written):
    _, out = written
    data = load_results(out / LEDGER_DIR)
    row = next(r for r in data.rows if r["predictions"])
    assert row["predictions"].endswith(".json")  # the ledger's value, as the runner wrote it
    plain = json.loads((FIXTURE / row["predictions"]).read_text())
    assert data.predictions(row) == plain
    assert data.predictions({"predictions": "predictions/absent.json"}) is None


def test_unreadable_gzip_predictions_are_missing(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "s")
    data = load_results(tmp_path / "s")
    row = next(r for r in data.rows if r["predictions"])
    path = tmp_path / "s" / row["predictions"]
    Path(f"{path}.gz").write_bytes(gzip.compress(b"{not json", mtime=0)[:-6])  # truncated
    path.unlink()
    assert data.predictions(row) is None


def test_environment_versions_are_kept_and_marked_where_runs_recorded_none(tmp_path):
    """No run record (the plain fixture): the ledger keeps the versions of the environment that
    wrote it, marked so, and regeneration states those, not its own."""
    ledger = write_ledger(load_results(FIXTURE), tmp_path / LEDGER_DIR)
    prov = json.loads((ledger / "provenance.json").read_text())
    assert prov["versions_from"] == "report environment" and prov["versions"]["python"]
    assert recorded(load_results(FIXTURE))["versions"] == {}


def test_a_report_without_its_ledger_says_how_to_write_one(tmp_path):
    report = tmp_path / "reports" / "old"
    report.mkdir(parents=True)
    (report / "results.md").write_text("# Results\n")
    with pytest.raises(PtcoreError, match="without its ledger.*--with-ledger"):
        write_report(report)

