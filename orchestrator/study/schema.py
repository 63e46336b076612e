"""The typed study: pydantic models of a study file (``extra="forbid"`` everywhere), the
keys a cell decides, and the error types every message of this package uses."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.common.stores import is_postgres, redact, url_problem
from ptcore.errors import PtcoreError

# run settings a cell decides (backbone, task, method) or the study decides elsewhere
CELL_KEYS = {"task", "method", "model", "layers", "trust_remote_code", "method_args"}
STUDY_KEYS = {"data_dir"}  # top-level `data_dir`, one for the whole study
FINAL_KEYS = {"seed"}  # search trials use train.seed (default 0); finals use final.seeds

SCALAR = (type(None), bool, int, float, str)
SEED_MAX = 2**32 - 1  # numpy's seeds: 0 .. 2**32 - 1


OUTPUT_ROOT = "studies_out"  # where a study writes when its file names no output_dir


def default_output_dir(name: str) -> str:
    """``studies_out/<name>``: a study's output directory when its file names none (relative to
    the working directory; the loader and the report both read it from here)."""
    return os.path.join(OUTPUT_ROOT, name)


class StudyError(PtcoreError):
    """A study file is invalid (message: ``file: path: what is wrong``)."""


class FieldError(ValueError):
    """A validator's error about one key inside the model it checks (``field``): the path
    of the message names it, ``search.lr.low`` rather than ``search.lr``."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _fmt_loc(loc) -> str:
    return ".".join(str(x) for x in loc) if loc else "(top level)"


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
    outage_s: float = Field(
        300.0,
        gt=0,
        description="how long the driver retries a write to MLflow or Optuna while its store is unreachable (bounded "
        "exponential backoff; trials keep training meanwhile); past it the study stops cleanly, exit 3, and --resume "
        "continues it",
    )

    @field_validator("mlflow_uri")
    @classmethod
    def _mlflow_uri(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and is_postgres(v):
            why = url_problem(v, PG_EXAMPLE.format(db="mlflow"))
            if why:
                raise ValueError(why)
        return v

    @field_validator("optuna_storage")
    @classmethod
    def _optuna_storage(cls, v: Optional[str]) -> Optional[str]:
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
    output_dir: Optional[str] = Field(None, description=f"default {OUTPUT_ROOT}/<name>, relative to the working directory")
    report: ReportSettings = Field(default_factory=ReportSettings, description="what the report tests (contrasts, margin)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_' and '-' (it names directories and the MLflow experiment)")
        return v
