"""Study files: what to run, validated once, before anything starts.

A study is ``backbones x tasks x methods`` *cells*. Each cell is searched (Ray Tune +
Optuna over the method's ``search`` space, selection on dev only), then its best
configuration is re-run with every ``final.seeds`` seed. See ``studies/*.yaml``.

Every error names the file and the path of the offending key, on one line::

    studies/x.yaml: methods.0.search.lrr: unknown key for method 'ptuning_v2'; did you mean 'lr'? ...

Structure and types are checked by pydantic (``extra="forbid"`` everywhere); names and
keys are then checked against ptcore's registries (tasks, methods, run settings, method
options), and every method's fixed settings and the ends of its search ranges are built
into real :class:`ptcore.config.RunConfig` objects so a bad value fails here, not in
trial 17 an hour later.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ptcore.errors import ConfigError, PtcoreError

# run settings a cell decides (backbone, task, method) or the study decides elsewhere
CELL_KEYS = {"task", "method", "model", "layers", "method_args"}
STUDY_KEYS = {"data_dir"}  # top-level `data_dir`, one for the whole study
FINAL_KEYS = {"seed"}  # search trials use train.seed (default 0); finals use final.seeds

SCALAR = (type(None), bool, int, float, str)


class StudyError(PtcoreError):
    """A study file is invalid (message: ``file: path: what is wrong``)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneSpec(Strict):
    id: str = Field(description="hub id, packaged alias or local directory (relative to the study file)")
    layers: Optional[int] = Field(None, ge=1, description="keep the first k transformer layers")
    label: Optional[str] = Field(None, min_length=1, description="short name in cell ids (default: from id + layers)")

    def display(self) -> str:
        if self.label:
            return self.label
        base = Path(self.id.rstrip("/")).name or self.id
        return f"{base}-L{self.layers}" if self.layers else base


class SearchParam(Strict):
    type: Literal["int", "float", "loguniform", "choice"]
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _check(self) -> "SearchParam":
        if self.type == "choice":
            if not self.values:
                raise ValueError("type 'choice' needs a non-empty `values` list")
            if self.low is not None or self.high is not None:
                raise ValueError("type 'choice' takes `values`, not `low`/`high`")
            bad = [v for v in self.values if not isinstance(v, SCALAR)]
            if bad:
                raise ValueError(f"choice values must be scalars (number, string, bool, null); got {bad[0]!r}")
            return self
        if self.values is not None:
            raise ValueError(f"type {self.type!r} takes `low` and `high`, not `values` (use type: choice)")
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type!r} needs both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g})")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"type 'int' needs integer bounds (got {self.low:g}..{self.high:g})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"type 'loguniform' needs low > 0 (got {self.low:g})")
        return self

    def ends(self) -> list[Any]:
        """Values that probe the range at validation time."""
        if self.type == "choice":
            return list(self.values or [])
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]

    def describe(self) -> str:
        if self.type == "choice":
            return "{" + ", ".join(map(str, self.values or [])) + "}"
        fmt = (lambda v: str(int(v))) if self.type == "int" else (lambda v: f"{v:g}")
        return f"{self.type}[{fmt(self.low)}, {fmt(self.high)}]"


class MethodSpec(Strict):
    name: str = Field(description="registered method (orchestrate ls methods)")
    label: Optional[str] = Field(None, min_length=1, description="name in cell ids; needed to list one method twice")
    fixed: dict[str, Any] = Field(default_factory=dict, description="run settings or method options, fixed")
    search: dict[str, SearchParam] = Field(default_factory=dict, description="key -> range, searched by Optuna TPE")

    def display(self) -> str:
        return self.label or self.name


class Budget(Strict):
    trials_per_cell: int = Field(2, ge=1, description="search trials per cell")
    max_concurrent: int = Field(2, ge=1, description="trials running at once (each ~2 GB RSS + ~10 s startup here)")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: keep 1/reduction_factor at each rung")
    time_budget_s: Optional[float] = Field(None, gt=0, description="search phase: start no new trial after this many seconds")
    seed: int = Field(0, description="seed of the TPE sampler")


class Final(Strict):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    runs_per_trial: Optional[int] = Field(
        None, ge=1,
        description="final runs one trial trains one after another, packed from cells sharing a backbone "
        "(pays the trial start-up once; default: one trial per cell, all its seeds; 1: a trial per seed)",
    )

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct (got {v})")
        return v


class Resources(Strict):
    workers_per_trial: Literal[1] = Field(1, description="Ray Train workers per trial (ptcore trains on one device)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class Tracking(Strict):
    mlflow_uri: Optional[str] = Field(None, description="default sqlite:///<output_dir>/mlflow.db")
    experiment: Optional[str] = Field(None, description="MLflow experiment name (default: the study name)")


class RaySettings(Strict):
    address: Optional[str] = Field(None, description="null: a local Ray; 'auto' or ray://host:10001 for a cluster")
    storage_path: Optional[str] = Field(
        None, description="Tune/Train storage (checkpoints): default <output_dir>/ray; on a cluster NFS or s3://"
    )
    num_cpus: Optional[int] = Field(None, ge=1, description="local Ray only: logical CPUs (default: all cores)")
    checkpoint_every_epoch: bool = Field(
        False,
        description="report the trainable weights with every epoch, not only the selected epoch's at the end of a run "
        "(costs a write + copy per epoch: ~90 MB for a fine-tuned MiniLM)",
    )
    keep_train_checkpoints: bool = Field(
        False, description="keep Ray Train's checkpoints after a cell is done (final checkpoints are in MLflow either way)"
    )
    trial_mode: Literal["auto", "local", "worker_group"] = Field(
        "auto",
        description="auto: single-worker CPU trials train inside reused Tune trial processes (Ray Train local mode; "
        "backbone and tokenized data stay loaded), others start a Ray Train worker group; local / worker_group force one",
    )


class Study(Strict):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    backbones: list[BackboneSpec] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict, description="run settings common to every run")
    budget: Budget = Field(default_factory=Budget)
    final: Final = Field(default_factory=Final)
    resources: Resources = Field(default_factory=Resources)
    data_dir: Optional[str] = Field(None, description="relative to the study file; default $PTCORE_DATA_DIR")
    tracking: Tracking = Field(default_factory=Tracking)
    ray: RaySettings = Field(default_factory=RaySettings)
    output_dir: Optional[str] = Field(None, description="default studies_out/<name>, relative to the working directory")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_' and '-' (it names directories and the MLflow experiment)")
        return v


# ------------------------------------------------------------------ cells and the plan


@dataclass(frozen=True)
class Cell:
    """One (backbone, task, method) combination."""

    id: str
    index: int
    backbone: BackboneSpec
    model: str  # resolved backbone id / absolute directory
    task: str
    method: MethodSpec


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


@dataclass
class LoadedStudy:
    """A validated study plus where it came from and where it writes."""

    study: Study
    path: Optional[Path]  # the study file (None when built from a dict)
    file_hash: str
    output_dir: Path
    data_dir: Optional[str]  # absolute, or None (ptcore then uses the hub)
    data_source: str  # for the plan: where data_dir came from

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def mlflow_uri(self) -> str:
        uri = self.study.tracking.mlflow_uri
        if uri:
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
                rel = uri[len("sqlite:///") :]
                if not os.path.isabs(rel):  # relative sqlite paths: against the output dir
                    return f"sqlite:///{(self.output_dir / rel).resolve()}"
            return uri
        return f"sqlite:///{self.output_dir / 'mlflow.db'}"

    @property
    def experiment_name(self) -> str:
        return self.study.tracking.experiment or self.study.name

    @property
    def storage_path(self) -> str:
        sp = self.study.ray.storage_path
        if not sp:
            return str(self.output_dir / "ray")
        return sp if "://" in sp else str(Path(sp).expanduser().resolve())

    @property
    def cache_dir(self) -> str:
        return str(self.output_dir / "cache")

    def cells(self) -> list[Cell]:
        return make_cells(self.study, self.path)

    def plan(self) -> dict[str, Any]:
        return make_plan(self)


def _resolve_model(model_id: str, base: Optional[Path]) -> str:
    """Local directories may be written relative to the study file."""
    expanded = os.path.expanduser(model_id)
    if base is not None and (model_id.startswith(".") or model_id.startswith("/") or model_id.startswith("~")):
        p = Path(expanded)
        return str(p if p.is_absolute() else (base / p).resolve())
    return model_id


def make_cells(study: Study, path: Optional[Path] = None) -> list[Cell]:
    base = path.parent.resolve() if path is not None else None
    cells: list[Cell] = []
    for bb in study.backbones:
        for task in study.tasks:
            for m in study.methods:
                cid = "__".join(_slug(x) for x in (bb.display(), task.replace("/", "-"), m.display()))
                cells.append(Cell(cid, len(cells), bb, _resolve_model(bb.id, base), task, m))
    return cells


def split_settings(method: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run settings, method options) of a flat key -> value dict."""
    from ptcore.config import run_fields

    run, opts = {}, {}
    for k, v in values.items():
        (run if k in run_fields() else opts)[k] = v
    return run, opts


def compose_run(ls: "LoadedStudy", cell: Cell, params: Optional[dict[str, Any]] = None, seed: Optional[int] = None) -> dict[str, Any]:
    """The raw RunConfig values of one run of ``cell`` (``params``: searched values)."""
    study = ls.study
    values: dict[str, Any] = {"task": cell.task, "method": cell.method.name, "model": cell.model}
    if cell.backbone.layers is not None:
        values["layers"] = cell.backbone.layers
    values.update(study.train)
    fixed_run, fixed_opts = split_settings(cell.method.name, cell.method.fixed)
    p_run, p_opts = split_settings(cell.method.name, params or {})
    values.update(fixed_run)
    values.update(p_run)
    values["method_args"] = {**fixed_opts, **p_opts}
    if ls.data_dir is not None:
        values["data_dir"] = ls.data_dir
    if seed is not None:
        values["seed"] = seed
    return values


def pack_runs(jobs: list, per_trial: Optional[int]) -> list[list]:
    """Final jobs (dataclasses with ``.cell`` and ``.runs``, one per cell) packed into trials.

    ``per_trial`` None: one trial per job. Otherwise trials of up to ``per_trial`` runs,
    filled with the runs of cells that share a backbone (one backbone load per trial), in
    study order; a job whose runs straddle two trials is split (``dataclasses.replace``).
    The finals of all cells share one Tuner, so packs keep the lanes busy.
    """
    if per_trial is None:
        return [[job] for job in jobs]
    groups: dict[tuple, list] = {}
    for job in jobs:
        groups.setdefault((job.cell.model, job.cell.backbone.layers), []).append(job)
    packs: list[list] = []
    for group in groups.values():
        pack, size = [], 0
        for job in group:
            runs = list(job.runs)
            while runs:
                take = min(per_trial - size, len(runs))
                pack.append(dataclasses.replace(job, runs=runs[:take]))
                runs, size = runs[take:], size + take
                if size == per_trial:
                    packs.append(pack)
                    pack, size = [], 0
        if pack:
            packs.append(pack)
    return packs


@dataclass
class _PlannedJob:
    cell: Cell
    runs: list


def final_packs(ls: "LoadedStudy") -> list[list]:
    """The plan's final trials: every cell x every final seed, packed as the runner does."""
    return pack_runs([_PlannedJob(c, list(ls.study.final.seeds)) for c in ls.cells()], ls.study.final.runs_per_trial)


def make_plan(ls: LoadedStudy) -> dict[str, Any]:
    cells = ls.cells()
    s = ls.study
    n_search = sum(s.budget.trials_per_cell if c.method.search else 0 for c in cells)
    packs = final_packs(ls)
    return {
        "study": s.name,
        "file": str(ls.path) if ls.path else None,
        "cells": len(cells),
        "backbones": [b.display() for b in s.backbones],
        "tasks": list(s.tasks),
        "methods": [m.display() for m in s.methods],
        "search_trials": n_search,
        "trials_per_cell": s.budget.trials_per_cell,
        "final_seeds": list(s.final.seeds),
        "final_runs": len(cells) * len(s.final.seeds),
        "final_trials": len(packs),
        "trials_total": n_search + len(packs),
        "runs_total": n_search + len(cells) * len(s.final.seeds),
        "max_concurrent": s.budget.max_concurrent,
        "resources": s.resources.model_dump(),
        "output_dir": str(ls.output_dir),
        "data_dir": ls.data_dir,
        "data_source": ls.data_source,
        "mlflow_uri": ls.mlflow_uri,
        "ray_address": s.ray.address or os.environ.get("RAY_ADDRESS") or "local",
        "storage_path": ls.storage_path,
    }


# ------------------------------------------------------------------ loading and validation


def _fmt_loc(loc) -> str:
    return ".".join(str(x) for x in loc) if loc else "(top level)"


def _unwrap(annotation):
    """Optional[X] -> X; list[X] -> X; dict[str, X] -> X (one level)."""
    origin = get_origin(annotation)
    if origin is Union:
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class whose instance sits at ``loc`` inside a Study."""
    cls: Any = Study
    for part in loc:
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            if part not in cls.model_fields:
                return None
            cls = _unwrap(cls.model_fields[part].annotation)
        elif get_origin(cls) in (list, dict):
            cls = _unwrap(get_args(cls)[-1])
        else:
            return None
    cls = _unwrap(cls)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.5)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


def _pydantic_message(err: dict) -> tuple[str, str]:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        return _fmt_loc(loc), f"unknown key {loc[-1]!r}; {_did_you_mean(loc[-1], known)}valid keys: {', '.join(known)}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        return _fmt_loc(loc), "required key is missing"
    got = err.get("input")
    suffix = "" if err["type"].startswith("value_error") or isinstance(got, (dict, list)) else f" (got {got!r})"
    return _fmt_loc(loc), f"{msg}{suffix}"


def _semantic_errors(study: Study, path: Optional[Path]) -> list[tuple[str, str]]:
    """Names and keys against ptcore's registries; real RunConfigs from every method."""
    from ptcore.config import make_run_config, run_fields
    from ptcore.methods import METHODS, method_fields
    from ptcore.tasks import TASKS

    errors: list[tuple[str, str]] = []
    for i, task in enumerate(study.tasks):
        if task.strip().lower() not in TASKS:
            errors.append((f"tasks.{i}", TASKS.unknown_message(task)))
    labels = [b.display() for b in study.backbones]
    for i, lab in enumerate(labels):
        if labels.index(lab) != i:
            errors.append((f"backbones.{i}", f"backbone {lab!r} is listed twice; give one a distinct `label`"))
    mlabels = [m.display() for m in study.methods]
    for i, lab in enumerate(mlabels):
        if mlabels.index(lab) != i:
            errors.append((f"methods.{i}", f"method {lab!r} is listed twice; give one a distinct `label`"))
    if len(set(t.strip().lower() for t in study.tasks)) != len(study.tasks):
        errors.append(("tasks", "a task is listed twice"))

    train_ok = set(run_fields()) - CELL_KEYS - STUDY_KEYS
    for key in study.train:
        if key not in train_ok:
            why = (
                "set per cell by backbones/tasks/methods"
                if key in CELL_KEYS
                else "set once for the study by the top-level `data_dir`"
                if key in STUDY_KEYS
                else f"unknown run setting; {_did_you_mean(key, train_ok)}valid: {', '.join(sorted(train_ok))}"
            )
            errors.append((f"train.{key}", why))
    if errors:
        return errors

    task0 = study.tasks[0].strip().lower()
    base = {"task": task0, **study.train}
    try:
        make_run_config(base)
    except ConfigError as e:
        bad = next((k for k in study.train if repr(k) in str(e)), None)
        return [(f"train.{bad}" if bad else "train", str(e))]

    run_keys = set(run_fields()) - CELL_KEYS - STUDY_KEYS - FINAL_KEYS
    for i, m in enumerate(study.methods):
        where = f"methods.{i}"
        if m.name not in METHODS:
            errors.append((f"{where}.name", METHODS.unknown_message(m.name)))
            continue
        opts = method_fields(m.name)
        valid = run_keys | opts
        for section, keys in (("fixed", m.fixed), ("search", m.search)):
            for key in keys:
                if key not in valid:
                    errors.append(
                        (
                            f"{where}.{section}.{key}",
                            f"unknown key for method {m.name!r}; {_did_you_mean(key, valid)}"
                            f"valid: run settings ({', '.join(sorted(run_keys))}) or its options ({', '.join(sorted(opts)) or 'none'})",
                        )
                    )
        for key in m.search:
            if key in m.fixed:
                errors.append((f"{where}.search.{key}", f"{key!r} is also set in {where}.fixed; keep one"))
        if errors:
            continue
        # build the fixed configuration, then each end of every search range
        fixed_run, fixed_opts = split_settings(m.name, m.fixed)
        values = {**base, "method": m.name, **fixed_run, "method_args": dict(fixed_opts)}
        try:
            make_run_config(values)
        except ConfigError as e:
            named = re.search(r"(?:option|setting) '([^']+)'", str(e))
            key = named.group(1) if named and named.group(1) in m.fixed else None
            errors.append((f"{where}.fixed.{key}" if key else f"{where}.fixed", str(e)))
            continue
        for key, sp in m.search.items():
            for v in sp.ends():
                probe = {**values, "method_args": dict(values["method_args"])}
                if key in run_fields():
                    probe[key] = v
                else:
                    probe["method_args"][key] = v
                try:
                    make_run_config(probe)
                except ConfigError as e:
                    errors.append((f"{where}.search.{key}", f"value {v!r}: {e}"))
                    break
    return errors


def study_error(path: Optional[Path], loc: str, msg: str) -> StudyError:
    where = f"{path}: " if path is not None else ""
    return StudyError(f"{where}{loc}: {msg}")


def parse_study(raw: Any, path: Optional[Path] = None) -> Study:
    """Validate a raw mapping (the YAML) into a Study; the first error, on one line."""
    if not isinstance(raw, dict):
        raise study_error(path, "(top level)", f"expected a mapping of keys (name, backbones, tasks, ...), got {type(raw).__name__}")
    try:
        study = Study.model_validate(raw)
    except ValidationError as e:
        loc, msg = _pydantic_message(e.errors()[0])
        raise study_error(path, loc, msg) from None
    errors = _semantic_errors(study, path)
    if errors:
        loc, msg = errors[0]
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise study_error(path, loc, msg + more)
    return study


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StudyError(f"{path}: {where}invalid YAML ({problem})") from None


def file_hash(raw: Any) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]


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
    out = Path(output_dir or study.output_dir or os.path.join("studies_out", study.name)).expanduser()
    out = (out if out.is_absolute() else cwd / out).resolve()
    if study.data_dir:
        d = Path(study.data_dir).expanduser()
        if not d.is_absolute():
            d = (p.parent if p is not None else cwd) / d
        data_dir, source = str(d.resolve()), "study file data_dir"
        if not Path(data_dir).is_dir():
            raise study_error(p, "data_dir", f"{data_dir} does not exist (relative paths are resolved against the study file's directory)")
    elif os.environ.get("PTCORE_DATA_DIR"):
        data_dir, source = str(Path(os.environ["PTCORE_DATA_DIR"]).expanduser().resolve()), "$PTCORE_DATA_DIR"
        if not Path(data_dir).is_dir():
            raise StudyError(f"PTCORE_DATA_DIR={os.environ['PTCORE_DATA_DIR']!r} does not exist")
    else:
        data_dir, source = None, "Hugging Face hub (no data_dir and PTCORE_DATA_DIR unset)"
    return LoadedStudy(study, p, file_hash(raw), out, data_dir, source)


def check_data(ls: LoadedStudy) -> list[str]:
    """Every task's files exist and parse, read by the same code the runs use, before
    anything starts (no output directory, no Ray, no model). Returns a line per task (its
    split sizes); raises :class:`StudyError` naming the study file, the task and the fix.

    Without a data directory the runs download from the hub: that is refused up front where
    ``HF_HUB_OFFLINE=1`` forbids it, and otherwise left unchecked (a download is not a check)."""
    from ptcore.errors import PtcoreError
    from ptcore.tasks import get_task, load_splits

    fix = "set the study's data_dir or PTCORE_DATA_DIR to the directory holding the official files"
    if ls.data_dir is None:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise study_error(ls.path, "data_dir", f"not set (nor PTCORE_DATA_DIR), and HF_HUB_OFFLINE forbids downloading the tasks; {fix}")
        return [f"{t}: from the Hugging Face hub (not checked before the runs)" for t in ls.study.tasks]
    lines = []
    for t in ls.study.tasks:
        try:
            splits, _ = load_splits(get_task(t), ls.data_dir)
        except PtcoreError as e:
            raise study_error(ls.path, f"tasks: {t}", f"{e} (data directory {ls.data_dir}, from {ls.data_source})") from None
        lines.append(f"{t}: " + ", ".join(f"{s} {len(x):,}" for s, x in splits.items()))
    return lines

