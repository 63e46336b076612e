"""The configuration of one training run, typed and validated once at the edge."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError
from .methods import METHODS, get_method, make_method_config, method_fields
from .methods.config_base import MethodConfig
from .presets import expand_preset, preset_method
from .tasks import get_task
from .tasks.templates import with_overrides

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def run_spec(cfg: "RunConfig", task: str):
    """The task's declaration as the run uses it: with the run's own template / label words."""
    return with_overrides(get_task(task), cfg.template, cfg.verbalizer)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: Optional[str] = Field(
        None, description="a named bundle of settings (`orchestrate ls presets`), e.g. dpt = the Dynamic Prompting "
        "reference code's: it fills in every setting the run does not give, so explicit settings win (ptcore.presets). "
        "Not hashed: the settings it filled in are, so a run with a preset and the same run with its settings spelled "
        "out have one config hash"
    )
    task: str = Field(
        description="registered task, e.g. superglue/cb; several joined by '+' (superglue/cb+glue/sst2) train one "
        "multi-task run: shared prompts, a head per task (ptcore.train, ptcore.model)"
    )
    method: str = Field("ptuning_v2", description="registered method")
    model: str = Field(DEFAULT_MODEL, description="hub id or local directory of the backbone")
    layers: Optional[int] = Field(None, ge=1, description="keep only the first k backbone layers")
    trust_remote_code: bool = Field(
        False, description="let transformers run Python code shipped with the model (hub custom architectures); off unless set"
    )
    # The method's options as the method's own config class (PTuningV2Config, DynamicConfig, ...):
    # a union discriminated by the sibling field `method`, resolved through the method registry
    # (so a method registered later extends it). Given as a mapping (YAML, JSON, --set), built
    # and validated once here; model_dump() writes every option, defaults filled in.
    method_args: SerializeAsAny[MethodConfig] = Field(
        default_factory=dict, validate_default=True, description="options of the method (see `orchestrate ls methods`)"
    )
    data_dir: Optional[str] = Field(None, description="data directory (default $PTCORE_DATA_DIR, else the hub)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed (numpy's range: 0 .. 2**32 - 1)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum_steps: int = Field(
        1, ge=1, description="split each batch of batch_size into this many micro-batches, one backward each, one optimizer "
        "step: the same update as one batch (batch_size stays the effective batch), in less memory"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype: auto = fp32 on the CPU, bf16 on a GPU that supports it; fp16 adds a GradScaler "
        "(an overflowed step is skipped). Weights stay fp32 (see ptcore.precision)"
    )
    eval_batch_size: int = Field(64, ge=1, description="batch size of dev/val/test evaluation (no backward pass, so larger than batch_size)")
    lr: Optional[float] = Field(None, gt=0, description="peak learning rate (default: the method's)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, le=1, description="warmup as a share of the run's optimizer steps (see warmup_steps)")
    warmup_steps: Optional[int] = Field(
        None, ge=0, description="warmup in optimizer steps; when set it replaces warmup_ratio (the DP reference: 500)"
    )
    optimizer: Literal["adamw", "adafactor"] = Field(
        "adamw", description="adamw = torch AdamW (fused where available), no decay on biases/LayerNorm; adafactor = "
        "transformers' Adafactor with a fixed learning rate (relative_step=False, scale_parameter=False, warmup_init=False), "
        "as T5 prompt tuning (Lester et al. 2021) and the DP reference use it; same parameter groups and weight_decay"
    )
    lr_schedule: Literal["linear", "constant"] = Field(
        "linear", description="linear = warmup then linear decay to 0; constant = warmup then the peak lr throughout"
    )
    max_grad_norm: float = Field(1.0, gt=0)
    patience: Optional[int] = Field(None, ge=1, description="stop after this many epochs without a better dev score")
    max_train_examples: Optional[int] = Field(None, ge=1, description="deterministic subsample of train (unstratified, one fixed sample; see train_size)")
    train_size: Optional[int] = Field(
        None, ge=1, description="train on a sample of this many training examples, stratified by label, drawn with "
        "data_seed (ptcore.sampling); all of them where the task has fewer"
    )
    data_seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the train_size sample and the dev_size carve")
    dev_size: Optional[int] = Field(
        None, ge=1, description="few-shot selection set: this many examples carved from train outside the train_size "
        "sample (stratified; whole passages for BoolQ / MultiRC / ReCoRD), instead of the task's dev split; needs train_size"
    )
    mixing: Literal["proportional", "temperature"] = Field(
        "proportional", description="multi-task runs: pick each batch's task with probability proportional to its "
        "training-set size n, or to n ** (1 / mixing_temperature)"
    )
    mixing_temperature: float = Field(2.0, ge=1, description="multi-task runs, mixing: temperature (1 = proportional; larger evens the tasks out)")
    init_from: Optional[str] = Field(
        None, description="checkpoint directory whose trained prompts (and this task's head, if it has one) start "
        "this run, e.g. a multi-task run's (P-Tuning v2's MPT-2)"
    )
    max_eval_examples: Optional[int] = Field(None, ge=1, description="deterministic subsample of dev/val/test")
    max_dev_examples: Optional[int] = Field(
        None, ge=1, description="deterministic subsample of dev only (evaluated every epoch for selection; val/test stay whole)"
    )
    max_length: Optional[int] = Field(None, ge=8, description="token limit (default: the task's)")
    pooling: Literal["mean", "cls", "pooler", "last"] = Field(
        "mean", description="how a head reads the hidden states: mean of the input tokens, the first ([CLS]), the "
        "backbone's pooler, or the last real token (a decoder LM's usual choice)"
    )
    format: Literal["auto", "head", "text"] = Field(
        "auto", description="how tasks are trained: 'head' = a head on the hidden states (encoders; decoders by choice), "
        "'text' = text to text, by the task's template and label words (rank classification) or by generation (QA); "
        "'auto' = the backbone family's default (encoder: head; decoder LM and T5: text); see ptcore.tasks.text_kinds"
    )
    template: Optional[str] = Field(
        None, description="format text: the task's input template instead of its declared one ({text_a}, {text_b}, "
        "{choices[0]}, ...; see ptcore.tasks.templates); single-task runs only"
    )
    verbalizer: Optional[tuple[str, ...]] = Field(
        None, description="format text: the label words instead of the task's declared ones, one per label in label order"
    )
    head_dropout: float = Field(0.1, ge=0, lt=1)
    device: str = "auto"
    threads: Optional[int] = Field(
        None, ge=1, description="torch intra-op threads for the run (torch.set_num_threads, restored after it); default: "
        "torch's own (the cores it sees). A study's trials set it to their cpus_per_worker. Not hashed (like device: where "
        "the run ran); result.json's compute block records the threads every run actually had"
    )
    kernels: Literal["fast", "reference"] = Field(
        "fast",
        description="CPU training kernels: 'fast' = ptcore's dropout and attention (same maths, another random stream), "
        "'reference' = torch's dropout and transformers' SDPA attention (see ptcore.kernels)",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, values: Any) -> Any:
        """The preset's settings, wherever the values do not give them (before anything is validated)."""
        if not isinstance(values, dict) or values.get("preset") is None:
            return values
        return expand_preset(values, run_fields(), method_fields, cls.model_fields["method"].default)

    @field_validator("method_args", mode="before")
    @classmethod
    def _method_options(cls, value: Any, info: ValidationInfo) -> Any:
        """A mapping of options -> the config class of the run's ``method`` (the discriminator)."""
        method = info.data.get("method")
        if method is None:  # `method` itself failed validation: pydantic reports that
            return value
        if isinstance(value, MethodConfig):
            if type(value) is get_method(method).config_cls:
                return value
            raise ConfigError(f"method_args is a {type(value).__name__}, but method is {method!r}: give {method!r}'s options")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"method_args: expected a mapping of {method!r} options (got {value!r})")
        return make_method_config(method, value)  # a ConfigError names a bad option

    @model_validator(mode="after")
    def _check_names(self) -> "RunConfig":
        names = task_names(self.task)
        for name in names:
            get_task(name)
        if len(set(names)) != len(names):
            raise ConfigError(f"task {self.task!r}: a task is listed twice; join distinct tasks with '+'")
        if self.train_size is not None and self.max_train_examples is not None:
            raise ConfigError("train_size and max_train_examples both set: keep train_size (stratified, seeded by data_seed)")
        if (self.template is not None or self.verbalizer is not None) and len(names) > 1:
            raise ConfigError("template / verbalizer override one task's text format: a multi-task run keeps each task's declared one")
        if self.template is not None or self.verbalizer is not None:
            run_spec(self, names[0])  # a bad override: one line now, not when the data loads
        if self.dev_size is not None and self.train_size is None:
            raise ConfigError("dev_size needs train_size (the few-shot dev is carved from train outside the train sample)")
        if self.init_from is not None and not all(
            os.path.isfile(os.path.join(os.path.expanduser(self.init_from), f)) for f in ("trainable.safetensors", "run_config.json")
        ):
            raise ConfigError(f"init_from {self.init_from!r} is not a ptcore checkpoint directory (a run's <output>/checkpoint, "
                              f"with trainable.safetensors and run_config.json)")
        if self.dev_size is not None and self.max_dev_examples is not None:
            raise ConfigError("dev_size and max_dev_examples both set: dev_size replaces the dev split; drop max_dev_examples")
        if self.warmup_steps is not None and self.warmup_ratio != RunConfig.model_fields["warmup_ratio"].default:
            raise ConfigError(f"warmup_steps ({self.warmup_steps}) and warmup_ratio ({self.warmup_ratio}) both set: "
                              "warmup_steps replaces warmup_ratio; keep one")
        return self

    def resolved(self) -> dict[str, Any]:
        """Everything that determines the run, method defaults filled in."""
        d = self.model_dump()  # method_args: every option of the method, defaults filled in
        if d["lr"] is None:
            d["lr"] = get_method(self.method).config_cls.default_lr
        return d

    def config_hash(self) -> str:
        """Stable hash of the resolved config minus where things live and what code may run (not what they are)."""
        return settings_hash(hashed_settings(self.resolved()))


# what other tools call our settings: suggested when one is given (--set learning_rate=... -> lr)
SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr", "num_epochs": "epochs", "num_train_epochs": "epochs",
    "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size", "bs": "batch_size",
    "warmup": "warmup_ratio", "max_seq_length": "max_length", "seq_len": "max_length", "max_seq_len": "max_length",
    "pre_seq_len": "prompt_length", "num_virtual_tokens": "prompt_length", "prefix_length": "prompt_length",
    "gradient_accumulation_steps": "grad_accum_steps", "fp16": "precision", "bf16": "precision",
    "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
}  # fmt: skip

HASH_ONLY_IF_SET = {
    "grad_accum_steps": 1, "precision": "auto", "train_size": None, "data_seed": 0, "dev_size": None,
    "mixing": "proportional", "mixing_temperature": 2.0, "init_from": None,
    "format": "auto", "template": None, "verbalizer": None,
    "optimizer": "adamw", "lr_schedule": "linear", "warmup_steps": None,
}  # fmt: skip


# where things live / run and what code may run; and the preset, a name for settings that are
# hashed as it filled them in (a run with a preset and its settings spelled out: one hash)
NOT_HASHED = ("data_dir", "device", "trust_remote_code", "threads", "preset")


def hashed_settings(resolved: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """What :meth:`RunConfig.config_hash` hashes of a resolved config (a result's ``config``),
    less ``drop``: all but :data:`NOT_HASHED`, and the settings added later (``HASH_ONLY_IF_SET``)
    only where they differ from their defaults, so earlier runs keep their hashes."""
    d = {k: v for k, v in resolved.items() if k not in NOT_HASHED and k not in drop}
    for k, default in HASH_ONLY_IF_SET.items():
        if d.get(k) == default:
            d.pop(k, None)
    method = METHODS.get(d["method"]) if d.get("method") in METHODS else None
    if method is not None and isinstance(d.get("method_args"), dict):
        # a method's options added later, likewise, and those its other options make moot
        d["method_args"] = method.config_cls.hashed_options(d["method_args"])
    return d


def settings_hash(settings: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``settings`` as sorted JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def task_names(task: str) -> list[str]:
    """The tasks of a run: one, or several joined by '+' (a multi-task run)."""
    return [t.strip() for t in task.split("+")]


def task_key(task: str) -> str:
    """A task's name where '/' cannot stand (a multi-task run's heads, its metric names and
    prediction folders, cell ids): ``superglue/cb`` -> ``superglue-cb``."""
    return task.replace("/", "-")


def flat_settings(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (``RunConfig.resolved()``, a result's ``config``) with each key spelled
    as a study file and ``--set`` spell it: run settings and method options side by side
    (``lr``, ``prompt_length``, ``tau0``), ``method_args`` dissolved. A method option named like
    a run setting keeps the prefix ``method.``. The one spelling of MLflow params, ``collect``'s
    columns and labels, and the report's searched-settings columns."""
    out = {k: v for k, v in resolved.items() if k != "method_args"}
    for k, v in (resolved.get("method_args") or {}).items():
        out[f"method.{k}" if k in out else k] = v
    return out


def run_fields() -> set[str]:
    return set(RunConfig.model_fields) - {"method_args"}


def split_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run settings, method options) of a flat key -> value mapping: the one place that tells
    them apart (a run setting is a RunConfig field; anything else is the method's option, which
    the method's config class then accepts or refuses by name). ``--set``, a study's ``fixed`` and
    ``search`` and a trial's searched values all go through here."""
    run, opts = {}, {}
    fields = run_fields()
    for k, v in values.items():
        (run if k in fields else opts)[k] = v
    return run, opts


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars/lists: 16, 1e-2, true, [9, 10, 11], null."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads '1e-2' as a string
        except ValueError:
            return value
    return value


def set_spelling(value: Any) -> str:
    """``value`` as ``--set KEY=VALUE`` spells it: ``parse_value(set_spelling(v)) == v`` (a tuple
    comes back a list). Strings YAML would read as something else are quoted (``"yes"``, a
    boolean to YAML 1.1; ``"null"``)."""
    if isinstance(value, (list, tuple)):  # its strings quoted: YAML reads [yes, no] as booleans
        return "[" + ", ".join(json.dumps(v) if isinstance(v, str) else set_spelling(v) for v in value) + "]"
    if isinstance(value, str):
        return value if parse_value(value) == value and value.strip() == value else json.dumps(value)
    return json.dumps(value) if value is None or isinstance(value, bool) else repr(value)


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` pairs to a raw config dict; keys are run settings or method options."""
    out = dict(base)
    out["method_args"] = dict(out.get("method_args") or {})
    # the method the options belong to: as given (--set method=... included), else the preset's
    # (--set preset=... included), else the default; checked by name here, by value in RunConfig
    given = {k.strip(): parse_value(t) for k, _, t in (i.partition("=") for i in overrides) if k.strip() in ("method", "preset")}
    method = preset_method({**out, **given}, RunConfig.model_fields["method"].default)
    m_fields = method_fields(method)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set prompt_length=16")
        key, text = item.split("=", 1)
        key = key.strip()
        run, opts = split_settings({key: parse_value(text)})
        if run or key in m_fields:
            out.update(run)
            out["method_args"].update(opts)
        else:
            known = sorted(run_fields() | m_fields)
            alias = [a for a in [SYNONYMS.get(key.lower())] if a in known]
            close = alias or difflib.get_close_matches(key, known, n=3, cutoff=0.5)  # another tool's name: its one match
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ConfigError(
                f"--set {key!r}: unknown setting for method {method!r}; {hint}valid keys: {', '.join(known)}"
            )
    return out


def make_run_config(values: dict[str, Any]) -> RunConfig:
    """Validate a raw dict into a RunConfig, turning pydantic errors into one line."""
    try:
        return RunConfig(**values)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, ConfigError):
            raise ctx_err from None
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting {loc!r}; valid: {', '.join(sorted(run_fields()))}") from None
        raise ConfigError(f"setting {loc!r}: {err['msg']} (got {err.get('input')!r})") from None
