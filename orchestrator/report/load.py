"""A study's results as the runner wrote them: ``<output_dir>/results.csv`` read through
:class:`orchestrator.ledger.results.ResultsTable` (the one reader and number parser of the ledger),
plus the per-run files its rows point to (``predictions``: ``<rel>``, or ``<rel>.gz`` as a
committed report's ``ledger/`` keeps them)."""

from __future__ import annotations

import gzip
import json
import zlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ptcore.errors import PtcoreError

from orchestrator.ledger.results import NUMERIC, ResultsTable, is_metric_column
from orchestrator.study.schema import default_output_dir


@dataclass
class StudyResults:
    name: str
    output_dir: Path
    config: dict  # the study file (may be empty)
    rows: list[dict]  # ledger rows (ResultsTable), normalised: see :func:`normalise`
    config_path: Optional[Path] = None  # the study file `config` was read from (None: none)
    _predictions: dict[str, Optional[dict]] = field(default_factory=dict, repr=False)

    def predictions(self, row: dict) -> Optional[dict]:
        """The row's predictions file (``{"val": {"predictions", "references", "groups"}, ...}``)
        or None where the ledger names none or the file is missing/unreadable. The file is
        ``<output_dir>/<rel>`` or, failing that, its gzip-compressed ``<rel>.gz``."""
        rel = row.get("predictions")
        if not rel:
            return None
        if rel not in self._predictions:
            blob = read_predictions(self.output_dir, rel)
            try:
                data = json.loads(blob) if blob is not None else None
            except ValueError:
                data = None
            self._predictions[rel] = data if isinstance(data, dict) else None
        return self._predictions[rel]

    def predictions_file(self, rel: str) -> Optional[Path]:
        """Where the predictions file ``rel`` (a row's ``predictions``) lies: ``<rel>`` or ``<rel>.gz``."""
        return predictions_file(self.output_dir, rel)


def predictions_file(output_dir: Path, rel: str) -> Optional[Path]:
    """``<output_dir>/<rel>`` if it is a file, else ``<output_dir>/<rel>.gz``, else None."""
    for path in (Path(output_dir) / rel, Path(output_dir) / f"{rel}.gz"):
        if path.is_file():
            return path
    return None


def read_predictions(output_dir: Path, rel: str) -> Optional[bytes]:
    """The bytes of the predictions file ``rel`` (decompressed where it is a ``.gz``), or None
    where it is missing or unreadable."""
    path = predictions_file(output_dir, rel)
    if path is None:
        return None
    try:
        blob = path.read_bytes()
        return gzip.decompress(blob) if path.suffix == ".gz" else blob
    except (OSError, EOFError, zlib.error):
        return None


def _number(v: Any) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if isinstance(v, float) and math.isnan(v) else v


def _json(v: Any) -> Any:
    if not isinstance(v, str) or not v.strip():
        return None
    try:
        return json.loads(v)
    except ValueError:
        return None


def normalise(row: dict) -> dict:
    """One ledger row as the report reads it: numbers or None, lower-case status/phase,
    string ids, and the JSON columns parsed (``config``, ``params``, ``data``: dict or None)."""
    r = dict(row)
    for col in list(r):
        if col in NUMERIC or is_metric_column(col):  # parsed by ResultsTable; text it could not parse -> None
            r[col] = _number(r[col])
    for col in ("layers", "total_params", "seed", "run_index"):
        if r.get(col) is not None:
            r[col] = int(r[col])
    r["regime"] = r.get("regime") or "full"  # ledgers written before regimes existed: the full regime
    for col in ("trial_id", "source_trial", "status", "phase", "task", "method", "method_label", "regime", "backbone", "model",
                "study", "git_commit", "primary_metric", "predictions"):
        v = r.get(col)
        r[col] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
    r["status"], r["phase"] = r["status"].lower(), r["phase"].lower()
    for col, key in (("config_json", "config"), ("params_json", "params"), ("data_json", "data")):
        parsed = _json(r.get(col))
        r[key] = parsed if isinstance(parsed, dict) else None
    return r


def _read_yaml(path: Path) -> dict:
    from orchestrator.study import read_yaml  # the study files' own reader (one-line errors with the YAML line)

    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise PtcoreError(f"{path}: (top level): a study file is a mapping of keys (name, output_dir, ...), got a {type(data).__name__}; pass a study file or its output directory")
    return data


def load_results(study: str | os.PathLike) -> StudyResults:
    """A study file (yaml: ``name``, ``output_dir``) or a study output directory."""
    path = Path(study)
    config_path: Optional[Path] = None
    if path.is_dir():
        out = path
        if (out / "study.yaml").is_file():
            config_path = out / "study.yaml"
        config = _read_yaml(config_path) if config_path is not None else {}
        name = config.get("name")
    elif path.is_file():
        config = _read_yaml(path)
        config_path = path
        name = config.get("name")
        if not name:
            raise PtcoreError(f"{path}: name: required key is missing; add it (`name: my-study`), or pass the study's output directory")
        out = Path(config.get("output_dir") or default_output_dir(name))
        if not out.is_absolute() and not out.is_dir() and (path.parent / out).is_dir():
            out = path.parent / out
    else:
        raise PtcoreError(f"{study}: no such study file or study output directory; pass a study file (studies/*.yaml) or its output directory (studies_out/<name>)")
    csv_path = out / "results.csv"
    if not csv_path.is_file():
        raise PtcoreError(f"no results at {csv_path}; run `orchestrate study` first (or pass the study output directory)")
    try:
        table = ResultsTable(csv_path)
    except (OSError, ValueError) as e:
        raise PtcoreError(f"cannot read {csv_path}: {e}") from e
    rows = [normalise(r) for r in table.rows]
    if not rows:
        raise PtcoreError(f"{csv_path} has no rows")
    if not name:
        names = sorted({r["study"] for r in rows if r["study"]})
        name = names[0] if names else out.resolve().name
    return StudyResults(name=str(name), output_dir=out, config=config, rows=rows, config_path=config_path)
