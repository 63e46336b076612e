"""A report's ledger: what ``orchestrate report`` reads, committed beside the report so that
anyone can regenerate it (``orchestrate report reports/<name>``), offline and byte for byte.

``reports/<name>/ledger/`` holds exactly:

- ``results.csv``: the study's ledger, as the runner wrote it (a byte copy);
- ``study.yaml``: the study file as run (the copy ``orchestrate study`` keeps in its output
  directory; else the study file the report was given), where there is one;
- ``predictions/<file>.json.gz``: each predictions file a ledger row names (its ``predictions``
  column, kept as it is: :func:`orchestrator.report.load.read_predictions` finds ``<rel>`` or
  ``<rel>.gz``), gzip-compressed with a zero mtime and no file name, so the bytes depend only on
  the file;
- ``provenance.json``: what the report's footer states and the ledger does not carry: the
  study's name, the package versions the runs recorded (their ``result.json`` in
  ``mlartifacts/``, else their ``ptcore.version.*`` MLflow tags in ``mlflow.db``) and the git
  commits they ran at. Where no run recorded versions it keeps those of the environment that
  wrote the ledger, marked so (``"versions_from": "report environment"``): a regenerated report
  never states the versions of the machine regenerating it.

Nothing else: no checkpoints, no MLflow store, no Optuna database.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional

from ptcore import runinfo
from ptcore.errors import PtcoreError
from ptcore.fileio import write_bytes_atomic

from orchestrator.report.load import StudyResults, predictions_file, read_predictions

LEDGER_DIR = "ledger"  # inside a committed report directory
PROVENANCE_FILE = "provenance.json"
RESULTS_FILE = "results.csv"
STUDY_FILE = "study.yaml"
FROM_RUNS, FROM_ENVIRONMENT, GIVEN = "runs", "report environment", "given"


def committed_ledger(path: str | Path) -> Optional[Path]:
    """``<path>/ledger`` where ``path`` is a committed report directory (it has a ``ledger/``
    holding ``results.csv``), else None."""
    ledger = Path(path) / LEDGER_DIR
    return ledger if (ledger / RESULTS_FILE).is_file() else None


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed header (mtime 0, no file name): the same bytes for the same input."""
    return gzip.compress(data, compresslevel=9, mtime=0)


# ------------------------------------------------------------------ what the runs recorded


def _order(versions: Mapping[str, str]) -> dict[str, str]:
    """python first, then :data:`ptcore.runinfo.PACKAGES` in its order, then the rest by name."""
    known = ["python", *runinfo.PACKAGES]
    keys = [k for k in known if k in versions] + sorted(k for k in versions if k not in known)
    return {k: versions[k] for k in keys}


def _run_ids(data: StudyResults) -> list[str]:
    ids = set()
    for r in data.rows:
        v = r.get("mlflow_run_id")
        if isinstance(v, str) and v.strip():
            ids.add(v.strip())
    return sorted(ids)


def _from_result_files(out: Path, run_ids: list[str]) -> dict[str, dict]:
    """run id -> the ``result.json`` MLflow keeps as that final run's artifact
    (``mlartifacts/<run id>/artifacts/result.json``; every one there when the ledger names no run)."""
    root = out / "mlartifacts"
    if not root.is_dir():
        return {}
    if run_ids:
        paths = {rid: root / rid / "artifacts" / "result.json" for rid in run_ids}
    else:
        paths = {p.parent.parent.name: p for p in sorted(root.glob("*/artifacts/result.json"))}
    found: dict[str, dict] = {}
    for rid, path in paths.items():
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(res, dict):
            found[rid] = {"versions": res.get("versions") if isinstance(res.get("versions"), dict) else {},
                          "commit": (res.get("git") or {}).get("commit") if isinstance(res.get("git"), dict) else None}
    return found


def _from_tags(out: Path, run_ids: list[str]) -> dict[str, dict]:
    """run id -> the ``ptcore.version.*`` / ``ptcore.git_commit`` tags in ``<out>/mlflow.db``
    (the study's default tracking store), read-only."""
    db = out / "mlflow.db"
    if not db.is_file() or not run_ids:
        return {}
    found: dict[str, dict] = {}
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            marks = ",".join("?" * len(run_ids))
            rows = con.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks}) "
                f"AND (key LIKE 'ptcore.version.%' OR key = 'ptcore.git_commit')", run_ids).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    for rid, key, value in rows:
        rec = found.setdefault(rid, {"versions": {}, "commit": None})
        if key == "ptcore.git_commit":
            rec["commit"] = value if value and value != "None" else None
        else:
            rec["versions"][key[len("ptcore.version."):]] = value
    return found


def recorded(data: StudyResults) -> dict[str, Any]:
    """``{"versions": {pkg: version}, "git_commits": [sha]}`` as the study's runs recorded them
    (versions that differ between runs: ``"2.1.0 / 2.2.0"``); ``versions`` empty where no run's
    record is found."""
    ids = _run_ids(data)
    runs = _from_tags(data.output_dir, ids)
    runs.update(_from_result_files(data.output_dir, ids))  # a run's result.json over its tags
    values: dict[str, set] = {}
    commits = {r["git_commit"] for r in data.rows if r.get("git_commit")}
    for rec in runs.values():
        for pkg, ver in (rec.get("versions") or {}).items():
            if ver is not None:
                values.setdefault(str(pkg), set()).add(str(ver))
        if rec.get("commit"):
            commits.add(str(rec["commit"]))
    return {"versions": _order({k: " / ".join(sorted(v)) for k, v in values.items()}), "git_commits": sorted(commits)}


def provenance_record(data: StudyResults, given: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """What ``provenance.json`` holds (and the report's footer states): ``given`` (a caller's
    ``provenance=``) where there is one, else what the runs recorded, else the versions of this
    environment, marked as such."""
    rec = recorded(data)
    out: dict[str, Any] = {"study": data.name}
    if given is not None and "versions" in given:
        out.update(versions=_order(dict(given["versions"])), versions_from=GIVEN)
    elif rec["versions"]:
        out.update(versions=rec["versions"], versions_from=FROM_RUNS)
    else:
        out.update(versions=_order(runinfo.versions()), versions_from=FROM_ENVIRONMENT)
    if given is not None and given.get("git_commit"):
        commit = given["git_commit"]
        out["git_commit"] = commit if isinstance(commit, str) else sorted(commit)  # overrides the rows' commits
    out["git_commits"] = rec["git_commits"]
    out["rendered_with"] = rendering_versions()
    return out


def rendering_versions() -> dict[str, str]:
    """The packages whose version decides a figure's bytes (matplotlib draws it, numpy feeds
    it, the bootstrap draws with numpy): a regeneration elsewhere compares figures byte for
    byte only where they match (tests/orchestrator/test_report_regenerate.py)."""
    import matplotlib
    import numpy

    return {"matplotlib": matplotlib.__version__, "numpy": numpy.__version__}


def read_provenance(ledger: Path) -> dict[str, Any]:
    path = Path(ledger) / PROVENANCE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PtcoreError(f"{path}: not readable JSON ({e}); rewrite the ledger with `orchestrate report <output dir> "
                          f"--output {Path(ledger).parent} --with-ledger`") from e
    if not isinstance(data, dict):
        raise PtcoreError(f"{path}: expected a JSON object (study, versions, git_commits)")
    return data


def build_provenance(prov: Mapping[str, Any]) -> dict[str, Any]:
    """``provenance.json`` as :func:`orchestrator.report.build.build_report` takes it: always
    ``versions`` (empty: "not recorded", never the regenerating environment's)."""
    out: dict[str, Any] = {"versions": dict(prov.get("versions") or {})}
    if prov.get("git_commit"):
        out["git_commit"] = prov["git_commit"]
    return out


def versions_note(prov: Mapping[str, Any]) -> str:
    """The footer's mark after "Package versions" (" (report environment)" or "")."""
    return f" ({FROM_ENVIRONMENT})" if prov.get("versions_from") == FROM_ENVIRONMENT else ""


# ------------------------------------------------------------------ writing a ledger


def _safe_rel(rel: str, csv: Path) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise PtcoreError(f"{csv}: predictions {rel!r}: not a path inside the output directory; a ledger keeps only "
                          f"files below it")
    return p


def ledger_files(data: StudyResults, provenance: Optional[Mapping[str, Any]] = None) -> dict[str, bytes]:
    """Every file of the ledger of ``data``: ``{path relative to ledger/: bytes}``."""
    csv = data.output_dir / RESULTS_FILE
    files = {RESULTS_FILE: csv.read_bytes()}
    study_yaml = data.output_dir / STUDY_FILE  # the study file as run (orchestrate study's copy)
    if not study_yaml.is_file():
        study_yaml = data.config_path
    if study_yaml is not None and Path(study_yaml).is_file():
        files[STUDY_FILE] = Path(study_yaml).read_bytes()
    for rel in sorted({r["predictions"] for r in data.rows if r.get("predictions")}):
        name = str(_safe_rel(rel, csv))
        blob = read_predictions(data.output_dir, rel)
        if blob is None:
            if predictions_file(data.output_dir, rel) is not None:
                raise PtcoreError(f"{data.output_dir / rel}: cannot read it; the ledger would not regenerate the report")
            continue  # missing: the report says so, and so will the regenerated one
        files[name if name.endswith(".gz") else f"{name}.gz"] = gzip_bytes(blob)
    prov = dict(provenance) if provenance is not None and "versions_from" in provenance else provenance_record(data, provenance)
    files[PROVENANCE_FILE] = (json.dumps(prov, indent=2, ensure_ascii=False) + "\n").encode()
    return files


def write_ledger(data: StudyResults, ledger: Path, provenance: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the ledger of ``data`` into ``ledger`` (each file atomically) and remove whatever
    else is there (an earlier ledger's predictions no row names any more). Returns ``ledger``."""
    ledger = Path(ledger)
    if ledger.resolve() == Path(data.output_dir).resolve():
        return ledger  # regenerating a committed report: its ledger is the source
    files = ledger_files(data, provenance)
    ledger.mkdir(parents=True, exist_ok=True)
    for name in sorted(files):
        write_bytes_atomic(ledger / name, files[name])
    keep = {ledger / name for name in files}
    for path in sorted(ledger.rglob("*"), reverse=True):  # deepest first: files, then emptied folders
        if path.is_file() or path.is_symlink():
            if path not in keep:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return ledger
