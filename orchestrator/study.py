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
trial 17 an hour later. Each backbone's config (no weights) gives its layer count, against
which ``layers`` and every ``depth`` (fixed, range ends, choices) are checked.
:func:`preflight` then checks what the file points at before a study starts: the output
directory can be written, the tracking stores answer, the backbones can load, every task's
data exist and parse.
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
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ptcore.config import split_settings, task_key
from ptcore.errors import ConfigError, PtcoreError

# run settings a cell decides (backbone, task, method) or the study decides elsewhere
CELL_KEYS = {"task", "method", "model", "layers", "trust_remote_code", "method_args"}
STUDY_KEYS = {"data_dir"}  # top-level `data_dir`, one for the whole study
FINAL_KEYS = {"seed"}  # search trials use train.seed (default 0); finals use final.seeds

SCALAR = (type(None), bool, int, float, str)
SEED_MAX = 2**32 - 1  # numpy's seeds: 0 .. 2**32 - 1


class StudyError(PtcoreError):
    """A study file is invalid (message: ``file: path: what is wrong``)."""


class FieldError(ValueError):
    """A validator's error about one key inside the model it checks (``field``): the path
    of the message names it, ``search.lr.low`` rather than ``search.lr``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackboneSpec(Strict):
    id: str = Field(description="hub id, packaged alias or local directory (relative to the study file)")
    layers: Optional[int] = Field(None, ge=1, description="keep the first k transformer layers")
    label: Optional[str] = Field(None, min_length=1, description="short name in cell ids (default: from id + layers)")
    trust_remote_code: bool = Field(
        False, description="let transformers run Python code that the model's repository ships (custom architectures); "
        "off unless set here"
    )

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
            if self.values is None:
                raise ValueError("type 'choice' needs a non-empty `values` list; list the values to try, e.g. values: [8, 16]")
            if not self.values:
                raise FieldError("values", "is empty: type 'choice' needs at least one value; list the values to try, e.g. [8, 16]")
            for f in ("low", "high"):
                if getattr(self, f) is not None:
                    raise FieldError(f, "type 'choice' takes `values`, not `low`/`high`; drop low/high, or use type int, float or loguniform")
            bad = [v for v in self.values if not isinstance(v, SCALAR)]
            if bad:
                raise FieldError("values", f"choice values must be scalars (number, string, bool, null); got {bad[0]!r}; "
                                           "put a list-valued setting in `fixed`")
            return self
        if self.values is not None:
            raise FieldError("values", f"type {self.type!r} takes `low` and `high`, not `values`; use type: choice, or drop values")
        for f in ("low", "high"):
            if getattr(self, f) is None:
                raise FieldError(f, f"required key is missing: type {self.type!r} needs both `low` and `high`; add {f}")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g}); swap them")
        if self.type == "int":
            for f in ("low", "high"):
                v = getattr(self, f)
                if v != int(v):
                    raise FieldError(f, f"type 'int' needs integer bounds (got {self.low:g}..{self.high:g}); "
                                        f"set {f} to a whole number, or use type: float")
        if self.type == "loguniform" and self.low <= 0:
            hint = f"{self.high / 1000:g}" if self.high > 0 else "1e-5"
            raise FieldError("low", f"type 'loguniform' needs low > 0 for a log scale (got {self.low:g}); set low to e.g. {hint}, "
                                    "or use type: float")
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
    backbones: Optional[list[str]] = Field(
        None, min_length=1, description="run this method only on these backbones (their labels or ids); default: every backbone"
    )

    def display(self) -> str:
        return self.label or self.name

    def runs_on(self, bb: "BackboneSpec") -> bool:
        return self.backbones is None or bb.display() in self.backbones or bb.id in self.backbones


class Budget(Strict):
    trials_per_cell: int = Field(2, ge=1, description="search trials per cell")
    max_concurrent: int = Field(2, ge=1, description="trials running at once (each ~2 GB RSS + ~10 s startup here)")
    scheduler: Literal["halving", "asha"] = Field(
        "halving", description="early stopping of search trials: 'halving' (successive halving decided from the cell's "
        "dev scores alone, so a second run selects the same configurations: orchestrator.ledger.halving) or 'asha' (Ray's "
        "asynchronous ASHA: decides against whichever trials reported first, so the selection can change with lane timing)"
    )
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped (the first rung)")
    reduction_factor: float = Field(2.0, gt=1, description="keep the best 1/reduction_factor of a cell's trials at each rung")
    time_budget_s: Optional[float] = Field(None, gt=0, description="search phase: start no new trial after this many seconds")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the TPE sampler")


class Final(Strict):
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
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
    workers_per_trial: int = Field(
        1, ge=1, le=1024, description="Ray Train workers per trial; N > 1 trains data-parallel (DDP: gloo on CPUs, NCCL on "
        "GPUs), train.batch_size being the global batch (ptcore.distributed)"
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(
        0.0, ge=0, description="GPUs per worker; below 1 (e.g. 0.25) packs that many small trials onto one GPU "
        "(memory is shared, not split: size the fraction to the model, docs/cluster.md)"
    )


PG_EXAMPLE = "postgresql://ptcore@db.example.internal:5432/{db}"


class Tracking(Strict):
    mlflow_uri: Optional[str] = Field(
        None,
        description="MLflow tracking store: default sqlite:///<output_dir>/mlflow.db; a PostgreSQL database "
        "(postgresql://user@host:5432/mlflow) shared by studies and machines; or an MLflow server (http://host:5000)",
    )
    experiment: Optional[str] = Field(None, description="MLflow experiment name (default: the study name)")
    optuna_storage: Optional[str] = Field(
        None,
        description="Optuna RDB storage of the cells' TPE studies (<study name>/<cell id>): default "
        "sqlite:///<output_dir>/optuna.db; or a PostgreSQL database of its own (postgresql://user@host:5432/optuna)",
    )
    max_checkpoint_mb: Optional[float] = Field(
        None,
        gt=0,
        description="log a final run's checkpoint to MLflow only if its trainable weights take at most this many MB "
        "(null: always). Prompt checkpoints are kilobytes; a fine-tuned MiniLM's ~90 MB a seed, most of a study's disk",
    )

    @field_validator("mlflow_uri")
    @classmethod
    def _mlflow_uri(cls, v: Optional[str]) -> Optional[str]:
        from orchestrator.common.stores import is_postgres, url_problem

        if v is not None and is_postgres(v):
            why = url_problem(v, PG_EXAMPLE.format(db="mlflow"))
            if why:
                raise ValueError(why)
        return v

    @field_validator("optuna_storage")
    @classmethod
    def _optuna_storage(cls, v: Optional[str]) -> Optional[str]:
        from orchestrator.common.stores import is_postgres, redact, url_problem

        if v is None:
            return v
        if is_postgres(v):
            why = url_problem(v, PG_EXAMPLE.format(db="optuna"))
            if why:
                raise ValueError(why)
        elif not v.startswith("sqlite:///"):
            raise ValueError(
                f"{redact(v)!r} is not an Optuna RDB storage URL; write sqlite:///optuna.db (a file; relative: in the output "
                f"directory) or {PG_EXAMPLE.format(db='optuna')} (or drop optuna_storage for the default)"
            )
        return v


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
    max_failures: int = Field(
        0,
        ge=0,
        description="times a trial whose process dies (a killed worker, a lost node) is retried; each retry continues "
        "the interrupted run after its last reported epoch (every epoch then saves a checkpoint with the optimizer "
        "and RNG state: ~3x the trainable weights). Errors raised by training (a NaN loss) are retried too, and fail again",
    )
    trial_mode: Literal["auto", "local", "worker_group"] = Field(
        "auto",
        description="auto: single-worker CPU trials train inside reused Tune trial processes (Ray Train local mode; "
        "backbone and tokenized data stay loaded), others start a Ray Train worker group; local / worker_group force one",
    )


REGIME_KEYS = {"train_size", "dev_size", "data_seed", "mixing", "mixing_temperature"}  # set by a regime, not by train:


class Regime(Strict):
    """A data regime the study's cells run in (``regimes:``; default: one ``full`` regime).

    * ``full``: each task's training split (``train_size`` may subsample it, stratified);
    * ``few_shot``: ``train_size`` examples (e.g. 32), a selection set of ``dev_size``
      (default: as many) carved from train outside the sample; final run i draws its sample
      with ``data_seeds[i]`` (default: its seed), so seeds vary the sample and the init;
    * ``multitask``: one run trains shared prompts over ``tasks`` (default: the study's),
      a head per task, batches mixed by ``mixing``; each task is reported.

    ``train`` overrides the study's ``train`` settings in this regime (e.g. more epochs for
    32 examples)."""

    name: Literal["full", "few_shot", "multitask"]
    label: Optional[str] = Field(None, min_length=1, description="name in cell ids and reports (default: the name)")
    train_size: Optional[int] = Field(None, ge=1, description="training examples per task (stratified sample)")
    dev_size: Optional[int] = Field(None, ge=1, description="few_shot: selection examples carved from train (default: train_size)")
    seeds: Optional[list[Annotated[int, Field(ge=0, le=SEED_MAX)]]] = Field(
        None, min_length=1, description="this regime's final seeds (default: final.seeds), e.g. more for few-shot's larger variance"
    )
    data_seeds: Optional[list[Annotated[int, Field(ge=0, le=SEED_MAX)]]] = Field(
        None, min_length=1, description="the sample's seed per final seed (one per seed; search runs use the first)"
    )
    tasks: Optional[list[str]] = Field(None, min_length=2, description="multitask: the tasks trained together (default: the study's)")
    mixing: Optional[Literal["proportional", "temperature"]] = Field(None, description="multitask: how batches mix tasks")
    mixing_temperature: Optional[float] = Field(None, ge=1, description="multitask, mixing temperature: T")
    train: dict[str, Any] = Field(default_factory=dict, description="run settings that replace the study's train: in this regime")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct (got {v})")
        return v

    def display(self) -> str:
        if self.label:
            return self.label
        return f"few_shot-{self.train_size}" if self.name == "few_shot" else self.name

    def describe(self, study: "Study") -> str:
        """One line for --dry-run: what this regime trains on."""
        bits = []
        if self.name == "multitask":
            bits.append("+".join(self.tasks or study.tasks))
            bits.append(f"mixing {self.mixing or 'proportional'}" + (f" T={self.mixing_temperature:g}" if self.mixing_temperature else ""))
        if self.train_size is not None:
            bits.append(f"train {self.train_size}")
        if self.name == "few_shot" or self.dev_size is not None:
            bits.append(f"dev {self.dev_size or self.train_size} carved from train")
        if self.seeds is not None:
            bits.append(f"seeds {self.seeds}")
        if self.data_seeds is not None:
            bits.append(f"data seeds {self.data_seeds}")
        bits += [f"{k}={v}" for k, v in self.train.items()]
        return f"{self.display()}" + (f" ({', '.join(bits)})" if bits else "")

    def settings(self, seed: Optional[int], final_seeds: list[int], search_seed: int) -> dict[str, Any]:
        """The run settings this regime sets for a run with ``seed`` (None: a search run)."""
        out: dict[str, Any] = dict(self.train)
        if self.train_size is not None:
            out["train_size"] = self.train_size
            out["data_seed"] = self.data_seed(seed, final_seeds, search_seed)
        if self.name == "few_shot":
            out["dev_size"] = self.dev_size or self.train_size
        elif self.dev_size is not None:
            out["dev_size"] = self.dev_size
        if self.mixing is not None:
            out["mixing"] = self.mixing
        if self.mixing_temperature is not None:
            out["mixing_temperature"] = self.mixing_temperature
        return out

    def data_seed(self, seed: Optional[int], final_seeds: list[int], search_seed: int) -> int:
        if self.data_seeds is None:
            return search_seed if seed is None else seed
        i = final_seeds.index(seed) if seed in final_seeds else 0
        return self.data_seeds[i]


# the seed papers' claims, tested by default where a study runs both methods of a pair:
# P-Tuning v2 ~ fine-tuning (its "comparable"), deep vs shallow prompts (P-Tuning v2 vs Lester),
# dynamic vs a fixed prompt (the DP paper), and the PEFT baseline reviewers expect
DEFAULT_CONTRASTS = (("ptuning_v2", "finetune"), ("ptuning_v2", "prompt_tuning"), ("dynamic", "prompt_tuning"),
                     ("lora", "finetune"))
DEFAULT_MARGIN = 2.0


class ReportSettings(Strict):
    contrasts: Optional[list[Annotated[list[str], Field(min_length=2, max_length=2)]]] = Field(
        None, description="the method pairs the report tests, [a, b] (a against b), by method label; default: "
        + ", ".join(f"[{a}, {b}]" for a, b in DEFAULT_CONTRASTS) + " where the study runs both",
    )
    equivalence_margin: float = Field(
        DEFAULT_MARGIN, gt=0, description="points (x100 of the primary metric): 'equivalent' means the difference "
        "lies within ± this, by two one-sided tests (TOST)",
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="family-wise error rate of each family (Holm)")
    bootstrap_resamples: int = Field(1000, ge=99, description="resamples of the test items for each cell's interval")

    def pairs(self, labels: list[str]) -> list[tuple[str, str]]:
        """The contrasts that apply to a study whose methods are ``labels``."""
        if self.contrasts is not None:
            return [(a, b) for a, b in self.contrasts]
        return [(a, b) for a, b in DEFAULT_CONTRASTS if a in labels and b in labels]


class Study(Strict):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    backbones: list[BackboneSpec] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    regimes: Optional[list[Regime]] = Field(
        None, min_length=1, description="data regimes (full, few_shot, multitask); default: one full regime"
    )
    train: dict[str, Any] = Field(default_factory=dict, description="run settings common to every run")
    budget: Budget = Field(default_factory=Budget)
    final: Final = Field(default_factory=Final)
    resources: Resources = Field(default_factory=Resources)
    data_dir: Optional[str] = Field(None, description="relative to the study file; default $PTCORE_DATA_DIR")
    tracking: Tracking = Field(default_factory=Tracking)
    ray: RaySettings = Field(default_factory=RaySettings)
    output_dir: Optional[str] = Field(None, description="default studies_out/<name>, relative to the working directory")
    report: ReportSettings = Field(default_factory=ReportSettings, description="what the report tests (contrasts, margin)")

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
    task: str  # one task, or a multi-task regime's tasks joined by '+'
    method: MethodSpec
    regime: Optional[Regime] = None  # None: the default full regime (cell ids as before regimes existed)

    @property
    def regime_label(self) -> str:
        return self.regime.display() if self.regime is not None else "full"


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
    output_source: str = "output_dir"  # what set output_dir, for errors: the study key or --output-dir

    @property
    def name(self) -> str:
        return self.study.name

    def _store(self, uri: Optional[str], default: str) -> str:
        """A store URL as MLflow / Optuna get it: relative sqlite paths against the output
        dir, PostgreSQL with its driver named (:func:`orchestrator.common.stores.normalize`)."""
        from orchestrator.common.stores import normalize

        if uri:
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
                rel = uri[len("sqlite:///") :]
                if not os.path.isabs(rel):  # relative sqlite paths: against the output dir
                    return f"sqlite:///{(self.output_dir / rel).resolve()}"
            return normalize(uri)
        return f"sqlite:///{self.output_dir / default}"

    @property
    def mlflow_uri(self) -> str:
        return self._store(self.study.tracking.mlflow_uri, "mlflow.db")

    @property
    def optuna_storage(self) -> str:
        """The Optuna storage URL of the cells' studies (default: ``optuna.db`` in the output dir)."""
        return self._store(self.study.tracking.optuna_storage, "optuna.db")

    def optuna_study_name(self, cell: "Cell") -> str:
        """A cell's Optuna study: ``<study name>/<cell id>``, so the studies of many study
        files share one database without colliding."""
        return f"{self.name}/{cell.id}"

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
        for regime in study.regimes or [None]:
            if regime is not None and regime.name == "multitask":
                tasks = ["+".join(regime.tasks or study.tasks)]
            else:
                tasks = list(study.tasks)
            for task in tasks:
                for m in study.methods:
                    if not m.runs_on(bb):
                        continue
                    parts = [bb.display(), task_key(task), m.display()] + ([regime.display()] if regime is not None else [])
                    cid = "__".join(_slug(x) for x in parts)
                    cells.append(Cell(cid, len(cells), bb, _resolve_model(bb.id, base), task, m, regime))
    return cells


def final_seeds(study: Study, cell: Cell) -> list[int]:
    """The seeds of a cell's final runs: its regime's ``seeds``, else ``final.seeds``."""
    if cell.regime is not None and cell.regime.seeds is not None:
        return list(cell.regime.seeds)
    return list(study.final.seeds)


def compose_run(ls: "LoadedStudy", cell: Cell, params: Optional[dict[str, Any]] = None, seed: Optional[int] = None) -> dict[str, Any]:
    """The raw RunConfig values of one run of ``cell`` (``params``: searched values)."""
    study = ls.study
    values: dict[str, Any] = {"task": cell.task, "method": cell.method.name, "model": cell.model}
    if cell.backbone.layers is not None:
        values["layers"] = cell.backbone.layers
    if cell.backbone.trust_remote_code:  # only where the study says so (RunConfig's default: off)
        values["trust_remote_code"] = True
    values.update(study.train)
    if cell.regime is not None:  # the regime's sample and settings replace the study's caps
        regime = cell.regime.settings(seed, final_seeds(study, cell), int(study.train.get("seed", 0)))
        if "train_size" in regime:
            values.pop("max_train_examples", None)
        if "dev_size" in regime:
            values.pop("max_dev_examples", None)
        values.update(regime)
    fixed_run, fixed_opts = split_settings(cell.method.fixed)
    p_run, p_opts = split_settings(params or {})
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
    return pack_runs([_PlannedJob(c, final_seeds(ls.study, c)) for c in ls.cells()], ls.study.final.runs_per_trial)


def make_plan(ls: LoadedStudy) -> dict[str, Any]:
    from orchestrator.common.stores import redact

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
        "regimes": [r.display() for r in s.regimes] if s.regimes else ["full"],
        "search_trials": n_search,
        "trials_per_cell": s.budget.trials_per_cell,
        "final_seeds": list(s.final.seeds),
        "final_runs": sum(len(final_seeds(s, c)) for c in cells),
        "final_trials": len(packs),
        "trials_total": n_search + len(packs),
        "runs_total": n_search + sum(len(final_seeds(s, c)) for c in cells),
        "max_concurrent": s.budget.max_concurrent,
        "resources": s.resources.model_dump(),
        "output_dir": str(ls.output_dir),
        "data_dir": ls.data_dir,
        "data_source": ls.data_source,
        "mlflow_uri": redact(ls.mlflow_uri),
        "optuna_storage": redact(ls.optuna_storage),
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


# what a missing required key looks like, for the fix
MISSING_EXAMPLES = {
    "name": "name: my-study",
    "backbones": "backbones: [{id: sentence-transformers/all-MiniLM-L6-v2}]",
    "tasks": "tasks: [superglue/cb]  (orchestrate ls tasks)",
    "methods": "methods: [{name: finetune}]  (orchestrate ls methods)",
    "id": "id: sentence-transformers/all-MiniLM-L6-v2",
    "type": "type: loguniform  (int, float, loguniform or choice)",
}

# the fix for a value of the wrong type (pydantic error type -> what to write)
TYPE_FIXES = {
    "list_type": "write a YAML list: [a, b] or one `- item` per line",
    "dict_type": "write a mapping (key: value lines or {key: value})",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number, e.g. 0.5 or 1.0e-3",
    "float_type": "use a number, e.g. 0.5 or 1.0e-3",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "string_type": "use a string (quote it if it looks like a number)",
    "too_short": "list at least one",
}


def _type_fix(err: dict, loc: tuple) -> str:
    kind = err["type"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        if model is SearchParam:
            return "write a range, e.g. {type: loguniform, low: 1.0e-5, high: 1.0e-3}, or put a single value in `fixed`"
        if model is not None:
            return f"write a mapping with keys from: {', '.join(model.model_fields)}"
        return TYPE_FIXES["dict_type"]
    return TYPE_FIXES.get(kind, "")


def _pydantic_message(err: dict) -> tuple[str, str]:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        return _fmt_loc(loc), f"unknown key {loc[-1]!r}; {_did_you_mean(loc[-1], known)}valid keys: {', '.join(known)}"
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):  # a validator's error about one key of its model
        return _fmt_loc(loc + (cause.field,)), str(cause)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        example = MISSING_EXAMPLES.get(str(loc[-1]))
        return _fmt_loc(loc), "required key is missing; add it" + (f", e.g. {example}" if example else "")
    got = err.get("input")
    suffix = "" if err["type"].startswith("value_error") or isinstance(got, (dict, list)) else f" (got {got!r})"
    fix = _type_fix(err, loc)
    return _fmt_loc(loc), f"{msg}{suffix}" + (f"; {fix}" if fix else "")


def _semantic_errors(study: Study, path: Optional[Path]) -> list[tuple[str, str]]:
    """Names and keys against ptcore's registries; real RunConfigs from every method."""
    from ptcore.config import make_run_config, run_fields
    from ptcore.methods import METHODS, method_fields
    from ptcore.tasks import TASKS

    errors: list[tuple[str, str]] = []
    res = study.resources
    if res.workers_per_trial > 1 and study.ray.trial_mode == "local":
        errors.append(("ray.trial_mode", f"'local' trains in one process, but resources.workers_per_trial is "
                       f"{res.workers_per_trial}; use trial_mode auto (or worker_group), or workers_per_trial: 1"))
    if res.gpus_per_worker > 1 and res.gpus_per_worker != int(res.gpus_per_worker):
        errors.append(("resources.gpus_per_worker", f"{res.gpus_per_worker:g} GPUs: above 1 a worker takes whole GPUs; "
                       "give an integer, or a fraction below 1 to share one GPU"))
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
    for i, pair in enumerate(study.report.contrasts or []):
        for j, name in enumerate(pair):
            if name not in mlabels:
                errors.append((f"report.contrasts.{i}.{j}", f"no method {name!r} in this study; {_did_you_mean(name, mlabels)}"
                               f"a contrast names two of methods: {', '.join(mlabels)}"))
        if pair[0] == pair[1]:
            errors.append((f"report.contrasts.{i}", f"[{pair[0]}, {pair[1]}] compares a method with itself; name two methods"))
    if len(set(t.strip().lower() for t in study.tasks)) != len(study.tasks):
        errors.append(("tasks", "a task is listed twice; list each task once"))

    train_ok = set(run_fields()) - CELL_KEYS - STUDY_KEYS
    errors.extend(_regime_errors(study, train_ok, TASKS))
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

    # each backbone's layer count, from its config (no weights, no download)
    base_dir = path.parent.resolve() if path is not None else None
    kept: list[tuple[int, str, Optional[int], bool]] = []  # (index, label, layers a run keeps, truncated)
    for i, bb in enumerate(study.backbones):
        try:
            n, _ = backbone_layers(bb.id, _resolve_model(bb.id, base_dir))
        except ConfigError as e:
            errors.append((f"backbones.{i}.id", str(e)))
            n = None
        if n is not None and bb.layers is not None and bb.layers > n:
            errors.append(
                (f"backbones.{i}.layers", f"layers={bb.layers} is out of range: {bb.id} has {n} layers; use 1..{n} (or drop layers to keep them all)")
            )
            n = None
        kept.append((i, bb.display(), bb.layers if bb.layers is not None else n, bb.layers is not None))

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
                    others = [n for n in METHODS.names() if n != m.name and key in method_fields(n)]
                    hint = (
                        f"{key!r} is an option of {' and '.join(others)}, not of {m.name}: drop it here; "
                        if others
                        else _did_you_mean(key, valid)
                    )
                    errors.append(
                        (
                            f"{where}.{section}.{key}",
                            f"unknown key for method {m.name!r}; {hint}"
                            f"valid: run settings ({', '.join(sorted(run_keys))}) or its options ({', '.join(sorted(opts)) or 'none'})",
                        )
                    )
        for key in m.search:
            if key in m.fixed:
                errors.append((f"{where}.search.{key}", f"{key!r} is also set in {where}.fixed; keep one"))
        if errors:
            continue
        # build the fixed configuration, then each end of every search range
        fixed_run, fixed_opts = split_settings(m.fixed)
        values = {**base, "method": m.name, **fixed_run, "method_args": dict(fixed_opts)}
        try:
            make_run_config(values)
        except ConfigError as e:
            named = re.search(r"(?:option|setting) '([^']+)'", str(e))
            key = named.group(1) if named and named.group(1) in m.fixed else None
            errors.append((f"{where}.fixed.{key}" if key else f"{where}.fixed", str(e)))
            continue
        for key, sp in m.search.items():
            fixes = ["drop it from values"] * len(sp.ends()) if sp.type == "choice" else ["change low", "change high"]
            for v, fix in zip(sp.ends(), fixes):
                p_run, p_opts = split_settings({key: v})
                probe = {**values, **p_run, "method_args": {**values["method_args"], **p_opts}}
                try:
                    make_run_config(probe)
                except ConfigError as e:
                    errors.append((f"{where}.search.{key}", f"value {v!r}: {e}; {fix}"))
                    break
        if m.backbones is not None:
            known = {b.display() for b in study.backbones} | {b.id for b in study.backbones}
            for j, name in enumerate(m.backbones):
                if name not in known:
                    errors.append((f"{where}.backbones.{j}", f"no backbone {name!r} in this study; {_did_you_mean(name, known)}"
                                   f"use a label or id of backbones: {', '.join(sorted(b.display() for b in study.backbones))}"))
        if "depth" in opts and not errors:
            labels = {b.display() for b in study.backbones if m.runs_on(b)}
            errors.extend(_depth_errors(where, m, [k for k in kept if k[1] in labels]))
    return errors


def _regime_errors(study: Study, train_ok: set[str], tasks_registry) -> list[tuple[str, str]]:
    """``regimes:`` on their own: what each kind needs, and what it may not set."""
    errors: list[tuple[str, str]] = []
    labels = [r.display() for r in study.regimes or []]
    for i, r in enumerate(study.regimes or []):
        where = f"regimes.{i}"
        if labels.index(r.display()) != i:
            errors.append((where, f"regime {r.display()!r} is listed twice; give one a distinct `label`"))
        if r.name == "few_shot" and r.train_size is None:
            errors.append((f"{where}.train_size", "few_shot needs train_size, the examples per task (e.g. 32)"))
        seeds = r.seeds or study.final.seeds
        if r.data_seeds is not None and len(r.data_seeds) != len(seeds):
            errors.append((f"{where}.data_seeds", f"{len(r.data_seeds)} data seeds for {len(seeds)} final seeds "
                           f"{list(seeds)}: give one per final seed (final run i draws its sample with data_seeds[i])"))
        if r.data_seeds is not None and r.train_size is None:
            errors.append((f"{where}.data_seeds", "data_seeds draw the train_size sample: set train_size too"))
        if r.name != "multitask":
            for key in ("tasks", "mixing", "mixing_temperature"):
                if getattr(r, key) is not None:
                    errors.append((f"{where}.{key}", f"{key} is for the multitask regime; drop it from {r.name}"))
        else:
            names = [t.strip().lower() for t in (r.tasks or study.tasks)]
            if len(names) < 2:
                errors.append((f"{where}.tasks", "multitask needs two or more tasks (list them in tasks:)"))
            if len(set(names)) != len(names):
                errors.append((f"{where}.tasks", "a task is listed twice; list each task once"))
            for j, t in enumerate(names):
                if t not in tasks_registry:
                    errors.append((f"{where}.tasks.{j}", tasks_registry.unknown_message(t)))
        for key in r.train:
            if key in REGIME_KEYS:
                errors.append((f"{where}.train.{key}", f"{key} is a regime key: set it on the regime itself, not in its train:"))
            elif key not in train_ok:
                errors.append((f"{where}.train.{key}", f"unknown run setting; {_did_you_mean(key, train_ok)}valid: {', '.join(sorted(train_ok))}"))
    return errors


def _cell_config_errors(ls_like: "LoadedStudy") -> list[tuple[str, str]]:
    """Every regime cell's search run and final runs as RunConfigs: a conflict shows here,
    before anything starts (e.g. a regime's train: against the study's train:)."""
    from ptcore.config import make_run_config

    errors: list[tuple[str, str]] = []
    regimes = ls_like.study.regimes or []
    for cell in ls_like.cells():
        if cell.regime is None:
            continue
        where = f"regimes.{regimes.index(cell.regime)}"
        for seed in [None, *final_seeds(ls_like.study, cell)]:
            try:
                make_run_config(compose_run(ls_like, cell, seed=seed))
            except ConfigError as e:
                errors.append((where, f"cell {cell.id}: {e}"))
                return errors
    return errors


def _depth_errors(where: str, m: MethodSpec, kept: list[tuple[int, str, Optional[int], bool]]) -> list[tuple[str, str]]:
    """``depth`` (fixed, or either end / every value of its search) against the layers each
    backbone keeps: a study that keeps the first k layers can prompt at most k."""
    from ptcore.methods.layers import resolve_layers

    def problem(depth: Any, n: int) -> Optional[str]:
        if depth is None or isinstance(depth, bool):
            return None
        if isinstance(depth, float) and depth.is_integer():
            depth = int(depth)
        try:
            resolve_layers(depth, n)
        except ConfigError as e:
            return str(e)
        except (TypeError, ValueError):
            return None  # not a depth at all: the method's own config check names it
        return None

    for i, label, n, truncated in kept:
        if n is None:
            continue
        has = f"backbones.{i} ({label}) keeps its first {n} layers" if truncated else f"backbones.{i} ({label}) has {n} layers"
        use = f"1..{n} (top k layers), layer indices 0..{n - 1}, or null (every layer)"
        if "depth" in m.fixed:
            e = problem(m.fixed["depth"], n)
            if e:
                return [(f"{where}.fixed.depth", f"{e}: {has}; set depth to {use}")]
        sp = m.search.get("depth")
        if sp is None:
            continue
        if sp.type == "choice":
            for v in sp.values or []:
                e = problem(v, n)
                if e:
                    return [(f"{where}.search.depth.values", f"{e}: {has}; drop {v!r} from values (depth takes {use})")]
        else:
            for end, v in (("low", sp.low), ("high", sp.high)):
                e = problem(v, n)
                if e:
                    bound = f"at most {n}" if v > n else "at least 1"
                    return [(f"{where}.search.depth.{end}", f"{e}: {has}; set {end} to {bound}")]
    return []


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _local_config(source: str):
    """A model directory's ``config.json`` as attributes (``model_type``, ``num_hidden_layers``),
    read without transformers or torch, so ``validate`` stays quick; None for a hub id."""
    import json
    from types import SimpleNamespace

    path = os.path.join(source, "config.json")
    if not os.path.isdir(source) or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)  # a ValueError on bad JSON: reported as "holds no readable model config"
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ValueError(f"{path} names no model_type")
    return SimpleNamespace(**raw)


def backbone_layers(model_id: str, model: str) -> tuple[Optional[int], Optional[str]]:
    """The layer count of a backbone, read from its config alone (no weights, no download):
    ``(layers, None)``; ``(None, why)`` where it cannot be checked here (a hub id not in the
    local cache: downloaded by the runs, or refused offline by :func:`preflight`). Raises
    :class:`ConfigError` where the backbone can never load: a local path that is no model
    directory, an unsupported family, or (offline) a near miss of a packaged model's name.
    ``model``: the id with a relative path resolved (:func:`_resolve_model`)."""
    from ptcore.backbones import ALIASES, PACKAGED, family_problem, resolve

    if model_id.startswith((".", "/", "~")) and not os.path.isdir(model):
        raise ConfigError(
            f"{model} is not a directory (relative paths are resolved against the study file's directory); point id at a "
            f"directory holding the backbone's config.json, or use a hub id or packaged model (orchestrate ls backbones)"
        )
    source = resolve(model)
    try:
        config = _local_config(source)
        if config is None:  # a hub id: transformers finds it in the cache (and imports torch doing so)
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        if os.path.isdir(source):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"{source} holds no readable model config ({first[:160]}); point id at a directory holding the backbone's "
                f"config.json, weights and tokenizer (save_pretrained's layout)"
            ) from None
        if not _offline():
            return None, f"{model_id}: from the Hugging Face hub (not checked before the runs)"
        close = difflib.get_close_matches(model_id, [*PACKAGED, *ALIASES], n=3, cutoff=0.8)
        if close:
            raise ConfigError(
                f"unknown backbone {model_id!r}: no such local directory or packaged model, and not in the Hugging Face "
                f"cache (HF_HUB_OFFLINE=1); did you mean {' or '.join(repr(c) for c in close)}? (orchestrate ls backbones)"
            ) from None
        return None, (
            f"{model_id}: not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; download it first "
            f"(unset HF_HUB_OFFLINE) or point id at a local directory"
        )
    why = family_problem(config)
    if why:
        raise ConfigError(f"{model_id!r} {why}")
    return getattr(config, "num_hidden_layers", None), None


def study_error(path: Optional[Path], loc: str, msg: str) -> StudyError:
    where = f"{path}: " if path is not None else ""
    return StudyError(f"{where}{loc}: {msg}")


def parse_study(raw: Any, path: Optional[Path] = None) -> Study:
    """Validate a raw mapping (the YAML) into a Study; the first error, on one line."""
    if raw is None:
        raise study_error(path, "(top level)", "the study is empty; write its keys: name, backbones, tasks, methods (see studies/smoke.yaml)")
    if not isinstance(raw, dict):
        raise study_error(
            path, "(top level)",
            f"expected a mapping of keys (name, backbones, tasks, ...), got a {type(raw).__name__}; write `key: value` lines (see studies/smoke.yaml)",
        )
    try:
        study = Study.model_validate(raw)
    except ValidationError as e:
        loc, msg = _pydantic_message(e.errors()[0])
        raise study_error(path, loc, msg) from None
    errors = _semantic_errors(study, path)
    if not errors and study.regimes:
        errors = _cell_config_errors(LoadedStudy(study, path, "", Path("."), None, ""))
    if errors:
        loc, msg = errors[0]
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise study_error(path, loc, msg + more)
    return study


def _yaml_fix(e: yaml.YAMLError) -> str:
    """What to do about a YAML syntax error, from PyYAML's problem and context."""
    problem = getattr(e, "problem", None) or ""
    context = getattr(e, "context", None) or ""
    cmark = getattr(e, "context_mark", None)
    opened = f" at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None else ""
    if "'\\t'" in problem or "\t" in problem:
        return "indent with spaces, not tabs"
    if "flow sequence" in context:
        return f"close the '[' opened{opened} with ']' (and separate items with commas)"
    if "flow mapping" in context:
        return f"close the '{{' opened{opened} with '}}' (and separate entries with commas)"
    if "quoted scalar" in context:
        return f"close the quote opened{opened}"
    if "mapping values are not allowed" in problem:
        return "a value holding ': ' needs quotes, or the key is indented wrongly"
    if "block end" in problem or "expected key" in problem or "block mapping" in context:
        return "line up the keys of one mapping at the same indentation"
    return "fix the YAML syntax there"


def _yaml_path(text: str) -> str:
    """The key path (``methods.0.search``) where parsing ``text`` stops at a syntax error."""
    frames: list[list] = []  # [kind ("map"/"seq"), current key or index, a map's value is in progress]

    def child_started() -> None:
        if frames and frames[-1][0] == "seq":
            frames[-1][1] += 1

    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            top = frames[-1] if frames else None
            if isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent)):
                if top is not None and top[0] == "map":
                    if not top[2]:
                        top[1], top[2] = getattr(ev, "value", None), True
                    else:
                        top[2] = False
                else:
                    child_started()
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                child_started()
                frames.append(["map", None, False] if isinstance(ev, yaml.MappingStartEvent) else ["seq", -1, False])
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frames.pop()
                if frames and frames[-1][0] == "map":
                    frames[-1][2] = False
    except yaml.YAMLError:
        pass
    parts = []
    for k, frame in enumerate(frames):
        inner = k == len(frames) - 1
        if frame[0] == "map" and frame[1] is not None and (frame[2] or not inner):
            parts.append(str(frame[1]))
        elif frame[0] == "seq" and frame[1] >= 0 and not inner:
            parts.append(str(frame[1]))
    return ".".join(parts)


def _duplicate_key(node, loc: tuple = ()) -> Optional[tuple[str, int, int]]:
    """The first key written twice in one mapping: (its path, first line, second line).
    PyYAML keeps the last silently; a study file must say one thing."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else None
            if k is not None and k != "<<":
                if k in seen:
                    return _fmt_loc(loc + (k,)), seen[k], key.start_mark.line + 1
                seen[k] = key.start_mark.line + 1
            found = _duplicate_key(value, loc + ((k,) if k is not None else ()))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, loc + (i,))
            if found:
                return found
    return None


def read_yaml(path: Path) -> Any:
    if path.is_dir():
        raise StudyError(f"{path}: is a directory, not a study file; pass the YAML file (e.g. studies/smoke.yaml)")
    if not path.is_file():
        raise StudyError(f"{path}: no such study file; check the path (the shipped studies are studies/*.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise StudyError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the study file as UTF-8") from None
    except OSError as e:
        raise StudyError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        column = f", column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        key = _yaml_path(text)
        at = f" in {key}" if key else ""
        raise StudyError(f"{path}: {where}invalid YAML{at} ({problem}{column}); {_yaml_fix(e)}") from None
    dup = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
    if dup:
        loc, first, second = dup
        raise StudyError(f"{path}: {loc}: the key is written twice (lines {first} and {second}); keep one")
    return raw


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


DATA_DIR_FIX = "point data_dir at the directory holding the official files (superglue/, glue/, ner/, squad/; see README)"


def unwritable(path: Path) -> Optional[str]:
    """Why a directory cannot be made or written at ``path``, without creating anything
    (None: it can): the path or an ancestor is a file, or the nearest existing directory is
    not writable."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable"
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{path} cannot be created: {parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"{path} cannot be created: {parent} is not writable"
            return None
    return None


def check_output(ls: LoadedStudy) -> None:
    """The output directory (and a local MLflow store or Ray storage elsewhere) can be
    created and written, checked before anything is: one line naming the key and the fix."""
    fix = "pass --output-dir DIR" if ls.output_source == "--output-dir" else "set output_dir (or pass --output-dir DIR)"
    why = unwritable(ls.output_dir)
    if why:
        raise study_error(ls.path, ls.output_source, f"{why}; {fix} to a directory you can write")
    for key, uri in (("mlflow_uri", ls.mlflow_uri), ("optuna_storage", ls.optuna_storage)):
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :])
            why = unwritable(db.parent)
            if why:
                raise study_error(ls.path, f"tracking.{key}", f"{why}; point the sqlite store at a directory you can write (or drop {key})")
    sp = ls.study.ray.storage_path
    if sp and "://" not in sp:
        why = unwritable(Path(ls.storage_path))
        if why:
            raise study_error(ls.path, "ray.storage_path", f"{why}; point storage_path at a directory you can write (or drop it)")


def check_stores(ls: LoadedStudy) -> None:
    """The tracking stores can be used from here, before anything starts: MLflow and Optuna
    each have a database of their own, and a PostgreSQL one has its driver installed, its
    server answering and its database there (one line naming the key and the fix)."""
    from orchestrator.common.stores import is_postgres, postgres_problem, same_database

    if same_database(ls.mlflow_uri, ls.optuna_storage):
        raise study_error(
            ls.path, "tracking.optuna_storage",
            "is the database of tracking.mlflow_uri: MLflow and Optuna each keep their schema version in a table "
            "alembic_version and cannot share one database; give Optuna its own (CREATE DATABASE optuna; "
            f"{PG_EXAMPLE.format(db='optuna')}), or drop optuna_storage for the sqlite file in the output directory",
        )
    for key, uri in (("mlflow_uri", ls.mlflow_uri), ("optuna_storage", ls.optuna_storage)):
        if is_postgres(uri):
            why = postgres_problem(uri)
            if why:
                raise study_error(ls.path, f"tracking.{key}", why)


def check_backbones(ls: LoadedStudy, starting: bool) -> list[str]:
    """Backbones whose config could not be read here (hub ids not in the local cache):
    a line each. ``starting`` (a real study, not a plan): refused where HF_HUB_OFFLINE=1
    makes them impossible to load, before anything starts."""
    notes = []
    base = ls.path.parent.resolve() if ls.path is not None else None
    for i, bb in enumerate(ls.study.backbones):
        n, why = backbone_layers(bb.id, _resolve_model(bb.id, base))
        if why is None:
            continue
        if starting and _offline():
            raise study_error(ls.path, f"backbones.{i}.id", why)
        notes.append(why)
    return notes


def preflight(ls: LoadedStudy, starting: bool = False) -> tuple[list[str], list[str]]:
    """Everything checked before a study starts (after the file itself, :func:`load_study`):
    the output directory can be written, the tracking stores answer (:func:`check_stores`),
    the backbones can load, every task's data exist and parse. Returns (data lines, backbone
    notes); raises :class:`StudyError` on one line."""
    check_output(ls)
    check_stores(ls)
    notes = check_backbones(ls, starting)
    return check_data(ls), notes


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
        if not {"val", "test"} & set(splits):  # nothing to report on: the runs would select and stop
            spec = get_task(t)
            expected = ", ".join(str(Path(ls.data_dir) / spec.local.path / spec.local.files[r]) for r in ("val", "test") if r in spec.local.files)
            raise study_error(
                ls.path, f"tasks: {t}", f"task {t}: the official file the study reports on is missing (expected {expected}); "
                f"put it there (data directory {ls.data_dir}, from {ls.data_source})",
            )
        lines.append(f"{t}: " + ", ".join(f"{s} {len(x):,}" for s, x in splits.items()))
    return lines

