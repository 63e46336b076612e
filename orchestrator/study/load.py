"""Loading a study: read and validate the file, then resolve its output and data
directories (:func:`load_study`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from orchestrator.study.plan import LoadedStudy
from orchestrator.study.schema import StudyError, default_output_dir
from orchestrator.study.validate import parse_study, study_error
from orchestrator.study.yamlio import file_hash, read_yaml

DATA_DIR_FIX = "point data_dir at the directory holding the official files (superglue/, glue/, ner/, squad/; see README)"


def load_study(
    path: str | os.PathLike | None = None,
    raw: Optional[dict] = None,
    output_dir: Optional[str] = None,
    cwd: Optional[Path] = None,
) -> LoadedStudy:
    """Read + validate a study file (or a raw dict); resolve output and data dirs."""
    p = Path(path) if path is not None else None
    if raw is None:
        if p is None:
            raise StudyError("no study file given")
        raw = read_yaml(p)
    study = parse_study(raw, p)
    cwd = cwd or Path.cwd()
    out = Path(output_dir or study.output_dir or default_output_dir(study.name)).expanduser()
    out = (out if out.is_absolute() else cwd / out).resolve()
    if study.data_dir:
        d = Path(study.data_dir).expanduser()
        if not d.is_absolute():
            d = (p.parent if p is not None else cwd) / d
        data_dir, source = str(d.resolve()), "study file data_dir"
        if not Path(data_dir).is_dir():
            what = "is not a directory" if Path(data_dir).exists() else "does not exist"
            raise study_error(
                p, "data_dir", f"{data_dir} {what} (relative paths are resolved against the study file's directory); {DATA_DIR_FIX}"
            )
    elif os.environ.get("PTCORE_DATA_DIR"):
        data_dir, source = str(Path(os.environ["PTCORE_DATA_DIR"]).expanduser().resolve()), "$PTCORE_DATA_DIR"
        if not Path(data_dir).is_dir():
            what = "is not a directory" if Path(data_dir).exists() else "does not exist"
            raise study_error(
                p, "data_dir", f"not set, and PTCORE_DATA_DIR={os.environ['PTCORE_DATA_DIR']!r} {what}; "
                f"set PTCORE_DATA_DIR or the study's data_dir to the directory holding the official files"
            )
    else:
        data_dir, source = None, "Hugging Face hub (no data_dir and PTCORE_DATA_DIR unset)"
    return LoadedStudy(study, p, file_hash(raw), out, data_dir, source, "--output-dir" if output_dir else "output_dir")
