"""Bad input, refused before anything starts: a corpus of malformed study files and CLI calls.

Every case goes through the real CLI entry (:func:`orchestrator.cli.app.main`) and must

* return 2;
* print exactly one line on stderr, ``error: FILE: KEY.PATH: what is wrong; the fix``
  (CLI argument errors name the command instead of a file);
* create no output directory and no MLflow store, and start no Ray (``ray.is_initialized()``
  stays False, no new ``raylet`` / ``gcs_server`` process appears).

Study-file cases run under ``validate``, ``study --dry-run`` and ``study`` itself (where
``run_study`` is replaced by a tripwire: a case that got that far would have started Ray).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import pytest
import yaml

from conftest import FIXTURES
from orchestrator.cli.app import main

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # 6 layers, packaged: its config is read offline
RAY_PROCESSES = {"raylet", "gcs_server"}

BASE: dict[str, Any] = {
    "name": "bad",
    "output_dir": "{tmp}/out",
    "backbones": [{"id": MINILM, "layers": 2}],
    "tasks": ["superglue/cb"],
    "methods": [
        {"name": "ptuning_v2", "fixed": {"prompt_length": 4}, "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}}
    ],
    "train": {"epochs": 1},
    "data_dir": str(FIXTURES),
}

Mutate = Callable[[dict], None]
Setup = Callable[[Path, pytest.MonkeyPatch], None]


@dataclass
class Case:
    """A malformed study: ``study`` mutates :data:`BASE` (or is the file's text / bytes);
    the one error line must start ``error: <file>: <where>`` and contain ``fix``."""

    id: str
    study: Union[Mutate, str, bytes, None]
    where: str
    fix: str
    setup: Optional[Setup] = None
    skip: Optional[str] = None


@dataclass
class Cli:
    """A bad command line: ``argv`` and ``prefix`` may name ``{study}`` (a valid study file,
    or ``study`` applied) and ``{tmp}``; the line must start ``error: <prefix>``, contain ``fix``."""

    id: str
    argv: list[str]
    prefix: str
    fix: str
    study: Union[Mutate, str, bytes, None] = None
    setup: Optional[Setup] = None
    stdout: str = ""  # what stdout must show (``validate`` of several files: the good ones)
    extra: list[tuple[str, str]] = field(default_factory=list)  # more study files: (name, text)


# ------------------------------------------------------------------ helpers for the corpus


def at(path: str, **kv) -> Mutate:
    """Update the mapping at a dotted path of the raw study (``methods.0.search.lr``)."""

    def mutate(raw: dict) -> None:
        node: Any = raw
        for part in path.split(".") if path else []:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node.update(kv)

    return mutate


def drop(key: str) -> Mutate:
    return lambda raw: raw.pop(key)


def both(*fns: Mutate) -> Mutate:
    def mutate(raw: dict) -> None:
        for fn in fns:
            fn(raw)

    return mutate


def method(m: dict) -> Mutate:
    """Replace the study's only method."""
    return lambda raw: raw.update(methods=[m])


def cb_data(broken: Callable[[Path], None]) -> Setup:
    """A data directory ``{tmp}/data`` holding CB's fixture files, broken by ``broken(cb_dir)``."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        cb = tmp / "data" / "superglue" / "CB"
        shutil.copytree(FIXTURES / "superglue" / "CB", cb)
        broken(cb)

    return setup


def append(name: str, text: str) -> Callable[[Path], None]:
    def broken(d: Path) -> None:
        with open(d / name, "a", encoding="utf-8") as f:
            f.write(text)

    return broken


USE_DATA = at("", data_dir="{tmp}/data")


def a_file(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "afile").write_text("a regular file\n")


def config_dir(**config) -> Setup:
    """``{tmp}/model``: a backbone directory holding only a config.json (no weights)."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        d = tmp / "model"
        d.mkdir()
        if config:
            import json

            (d / "config.json").write_text(json.dumps(config))

    return setup


TINY_BERT = dict(model_type="bert", num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=99)
TINY_T5 = dict(model_type="t5", num_layers=2, d_model=32, d_kv=8, num_heads=4, d_ff=64, vocab_size=99)


def no_data_dir(env: Optional[str]) -> Setup:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        mp.setenv("HF_HUB_OFFLINE", "1")
        if env is None:
            mp.delenv("PTCORE_DATA_DIR", raising=False)
        else:
            mp.setenv("PTCORE_DATA_DIR", env.replace("{tmp}", str(tmp)))

    return setup


def read_only(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o500)


PT2_DEPTH_SEARCH = {"name": "ptuning_v2", "fixed": {"prompt_length": 4}}


def no_psycopg2(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """As on a machine without the PostgreSQL driver: ``import psycopg2`` fails."""
    mp.setitem(sys.modules, "psycopg2", None)


# ------------------------------------------------------------------ the corpus: study files

STUDY_CASES = [
    # ---- the file itself: YAML syntax, encoding, shape
    Case("yaml-unclosed-bracket", "name: bad\ntasks: [superglue/cb\n", "line 3: invalid YAML in tasks (", "close the '[' opened at line 2"),
    Case("yaml-unclosed-brace", f"name: bad\nmethods:\n  - name: ptuning_v2\n    search:\n      lr: {{type: float, low: 0.1\n",
         "line 6: invalid YAML in methods.0.search.lr (", "close the '{' opened at line 5"),
    Case("yaml-tab-indent", "name: bad\n\tbackbones: []\n", "line 2: invalid YAML (", "indent with spaces, not tabs"),
    Case("yaml-unclosed-quote", "name: 'bad\ntasks: [superglue/cb]\n", "line 3: invalid YAML in name (", "close the quote opened at line 1"),
    Case("yaml-bad-indent", "name: bad\ntrain:\n  epochs: 2\n lr: 0.1\n", "line 4: invalid YAML (", "line up the keys"),
    Case("yaml-duplicate-key", yaml.safe_dump(BASE, sort_keys=False).replace("  search:\n", "  search:\n    lr: {type: float, low: 0.1, high: 0.2}\n"),
         "methods.0.search.lr: the key is written twice (lines", "keep one"),
    Case("empty-file", "", "(top level): the study is empty", "write its keys: name, backbones, tasks, methods"),
    Case("top-level-list", "- superglue/cb\n- glue/sst2\n", "(top level): expected a mapping", "write `key: value` lines"),
    Case("not-utf8", b"name: bad\ndescription: caf\xe9\n", "not UTF-8 text (byte", "save the study file as UTF-8"),
    # ---- unknown keys, with "did you mean"
    Case("unknown-top-key", at("", budgett={"trials_per_cell": 2}), "budgett: unknown key 'budgett'", "did you mean 'budget'?"),
    Case("unknown-method-key", at("methods.0", serach={}), "methods.0.serach: unknown key 'serach'", "did you mean 'search'?"),
    Case("unknown-range-key", at("methods.0.search.lr", lo=1e-4), "methods.0.search.lr.lo: unknown key 'lo'", "did you mean 'low'"),
    Case("unknown-train-key", at("train", epoch=3), "train.epoch: unknown run setting", "did you mean 'epochs'?"),
    Case("unknown-fixed-option", at("methods.0.fixed", prompt_lenght=8), "methods.0.fixed.prompt_lenght: unknown key for method 'ptuning_v2'",
         "did you mean 'prompt_length'"),
    Case("unknown-backbone-key", at("backbones.0", layer=2), "backbones.0.layer: unknown key 'layer'", "did you mean 'layers'"),
    Case("unknown-ray-key", at("ray", adress="auto"), "ray.adress: unknown key 'adress'", "did you mean 'address'?"),
    # ---- wrong types
    Case("tasks-not-a-list", at("", tasks="superglue/cb"), "tasks: Input should be a valid list", "write a YAML list"),
    Case("methods-a-mapping", at("", methods={"name": "finetune"}), "methods: Input should be a valid list", "write a YAML list"),
    Case("trials-a-word", at("budget", trials_per_cell="two"), "budget.trials_per_cell: Input should be a valid integer", "use a whole number"),
    Case("layers-fractional", at("backbones.0", layers=2.5), "backbones.0.layers: Input should be a valid integer", "use a whole number"),
    Case("search-a-scalar", at("methods.0.search", lr=0.01), "methods.0.search.lr: Input should be a valid dictionary", "write a range, e.g. {type: loguniform"),
    Case("search-type-unknown", at("methods.0.search.lr", type="uniform"), "methods.0.search.lr.type: Input should be", "'loguniform'"),
    Case("fixed-bool-a-word", at("methods.0.fixed", reparameterize="maybe"), "methods.0.fixed.reparameterize: ", "valid boolean"),
    Case("train-int-a-word", at("train", batch_size="big"), "train.batch_size: setting 'batch_size': Input should be a valid integer", "(got 'big')"),
    Case("missing-methods", drop("methods"), "methods: required key is missing", "add it, e.g. methods: [{name: finetune}]"),
    Case("bad-name", at("", name="my study"), "name: 'my study': use letters, digits", "'.', '_' and '-'"),
    Case("workers-per-trial-zero", at("resources", workers_per_trial=0), "resources.workers_per_trial: ", "greater than or equal to 1"),
    Case("workers-in-local-mode", lambda r: (r.setdefault("resources", {}).update(workers_per_trial=2), r.setdefault("ray", {}).update(trial_mode="local")),
         "ray.trial_mode: ", "use trial_mode auto (or worker_group), or workers_per_trial: 1"),
    Case("gpus-per-worker-1.5", at("resources", gpus_per_worker=1.5), "resources.gpus_per_worker: ", "give an integer, or a fraction below 1"),
    Case("train-data-dir", at("train", data_dir="/data"), "train.data_dir: set once for the study", "top-level `data_dir`"),
    Case("backbone-twice", at("", backbones=[{"id": MINILM, "layers": 2}, {"id": MINILM, "layers": 2}]), "backbones.1: backbone", "give one a distinct `label`"),
    Case("nothing-dynamic", method({"name": "dynamic", "fixed": {"position": "none"}}), "methods.0.fixed: method 'dynamic': nothing is dynamic",
         "or use method 'prompt_tuning'"),
    # ---- empty and inverted search ranges, log scales at or below zero
    Case("range-inverted", at("methods.0.search.lr", low=0.1, high=0.01), "methods.0.search.lr: low (0.1) must not exceed high (0.01)", "swap them"),
    Case("log-low-zero", at("methods.0.search.lr", low=0), "methods.0.search.lr.low: type 'loguniform' needs low > 0", "set low to e.g. 3e-05"),
    Case("log-low-negative", at("methods.0.search.lr", low=-1e-3), "methods.0.search.lr.low: type 'loguniform' needs low > 0", "set low to e.g."),
    Case("choice-empty", at("methods.0.search", depth={"type": "choice", "values": []}), "methods.0.search.depth.values: is empty",
         "list the values to try"),
    Case("choice-no-values", at("methods.0.search", depth={"type": "choice"}), "methods.0.search.depth: type 'choice' needs a non-empty `values`",
         "values: [8, 16]"),
    Case("range-missing-high", at("methods.0.search", weight_decay={"type": "float", "low": 0.0}), "methods.0.search.weight_decay.high: required key is missing",
         "add high"),
    Case("int-range-fractional", at("methods.0.search", prefix_hidden_size={"type": "int", "low": 8, "high": 16.5}),
         "methods.0.search.prefix_hidden_size.high: type 'int' needs integer bounds", "set high to a whole number"),
    Case("range-end-invalid", at("methods.0.search", warmup_ratio={"type": "float", "low": 0.0, "high": 1.5}),
         "methods.0.search.warmup_ratio: value 1.5: setting 'warmup_ratio'", "change high"),
    Case("choice-value-invalid", at("methods.0.search", pooling={"type": "choice", "values": ["mean", "max"]}),
         "methods.0.search.pooling: value 'max': setting 'pooling'", "drop it from values"),
    # ---- unknown task, method, backbone
    Case("task-typo", at("", tasks=["superglue/cbb"]), "tasks.0: unknown task 'superglue/cbb'", "did you mean 'superglue/cb'"),
    Case("method-typo", at("methods.0", name="ptuning"), "methods.0.name: unknown method 'ptuning'", "did you mean 'ptuning_v2'"),
    Case("backbone-typo", at("backbones.0", id="sentence-transformers/all-MiniLM-L6-v3"), "backbones.0.id: unknown backbone",
         f"did you mean '{MINILM}'?"),
    Case("backbone-alias-typo", at("backbones.0", id="minilmm"), "backbones.0.id: unknown backbone 'minilmm'", "did you mean 'minilm'?"),
    Case("backbone-no-such-dir", at("backbones.0", id="./models/nope"), "backbones.0.id: {tmp}/models/nope is not a directory",
         "point id at a directory holding the backbone's config.json"),
    Case("backbone-dir-no-config", at("backbones.0", id="./model"), "backbones.0.id: {tmp}/model holds no readable model config", "config.json",
         setup=config_dir()),
    Case("backbone-unsupported", at("backbones.0", id="./model"), "backbones.0.id: './model' is a 'distilbert' model",
         "supported families: decoder: gpt2, llama", setup=config_dir(model_type="distilbert")),
    Case("method-option-not-on-family",
         both(at("methods.0", name="dynamic", fixed={"estimator": "first_order"}, search={}), at("backbones.0", id="./model")),
         "methods.0.name: on backbone model-L2: method 'dynamic': estimator 'first_order' needs absolute position embeddings",
         "use estimator: mixture", setup=config_dir(**TINY_T5)),
    Case("format-not-on-family", both(at("train", format="head"), at("backbones.0", id="./model")), "methods.0: on backbone",
         "format 'head' does not run on the t5 family (it runs: text); set format: text", setup=config_dir(**TINY_T5)),
    # ---- data: missing directory or file, malformed rows (orchestrator.study.check_data)
    Case("data-dir-missing", at("", data_dir="{tmp}/nodata"), "data_dir: {tmp}/nodata does not exist", "point data_dir at the directory"),
    Case("data-dir-a-file", both(at("", data_dir="{tmp}/afile")), "data_dir: {tmp}/afile is not a directory", "point data_dir at", setup=a_file),
    Case("data-dir-empty", USE_DATA, "tasks: superglue/cb: task superglue/cb: no data files found", "put the official files there",
         setup=lambda tmp, mp: (tmp / "data").mkdir()),
    Case("data-val-missing", USE_DATA, "tasks: superglue/cb: task superglue/cb: the official file the study reports on is missing",
         "put it there", setup=cb_data(lambda d: (d / "val.jsonl").unlink())),
    Case("data-row-cut-short", USE_DATA, "tasks: superglue/cb: {tmp}/data/superglue/CB/train.jsonl:", "expected one JSON object per line",
         setup=cb_data(append("train.jsonl", '{"premise": "a row cut short",\n'))),
    Case("data-row-not-object", USE_DATA, "tasks: superglue/cb: {tmp}/data/superglue/CB/val.jsonl:", "not an object; expected one JSON object",
         setup=cb_data(append("val.jsonl", "[1, 2]\n"))),
    Case("data-bad-label", USE_DATA, "tasks: superglue/cb: task superglue/cb: label 'maybe' is not one of", "'entailment'",
         setup=cb_data(append("train.jsonl", '{"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 99}\n'))),
    Case("data-missing-field", USE_DATA, "tasks: superglue/cb: task superglue/cb: record has no field 'hypothesis'", "official format",
         setup=cb_data(append("train.jsonl", '{"premise": "p", "label": "neutral", "idx": 99}\n'))),
    Case("data-not-utf8", USE_DATA, "tasks: superglue/cb: {tmp}/data/superglue/CB/train.jsonl: not UTF-8 text", "the official files are UTF-8",
         setup=cb_data(lambda d: open(d / "train.jsonl", "ab").write(b'{"premise": "caf\xe9"}\n'))),
    Case("data-none-offline", drop("data_dir"), "data_dir: not set (nor PTCORE_DATA_DIR), and HF_HUB_OFFLINE forbids",
         "set the study's data_dir or PTCORE_DATA_DIR", setup=no_data_dir(None)),
    Case("data-env-missing", drop("data_dir"), "data_dir: not set, and PTCORE_DATA_DIR='{tmp}/gone' does not exist",
         "set PTCORE_DATA_DIR or the study's data_dir", setup=no_data_dir("{tmp}/gone")),
    # ---- negative or zero budgets
    Case("epochs-negative", at("train", epochs=-1), "train.epochs: setting 'epochs'", "greater than or equal to 1"),
    Case("trials-zero", at("budget", trials_per_cell=0), "budget.trials_per_cell: ", "greater than or equal to 1"),
    Case("concurrency-negative", at("budget", max_concurrent=-2), "budget.max_concurrent: ", "greater than or equal to 1"),
    Case("time-budget-negative", at("budget", time_budget_s=-60), "budget.time_budget_s: ", "greater than 0"),
    Case("grace-period-zero", at("budget", grace_period=0), "budget.grace_period: ", "greater than or equal to 1"),
    Case("reduction-factor-one", at("budget", reduction_factor=1), "budget.reduction_factor: ", "greater than 1"),
    Case("tpe-seed-negative", at("budget", seed=-1), "budget.seed: ", "greater than or equal to 0"),
    Case("max-train-negative", at("train", max_train_examples=-10), "train.max_train_examples: setting 'max_train_examples'", "greater than or equal to 1"),
    Case("max-eval-zero", at("train", max_eval_examples=0), "train.max_eval_examples: setting 'max_eval_examples'", "greater than or equal to 1"),
    Case("max-dev-negative-fixed", at("methods.0.fixed", max_dev_examples=-1), "methods.0.fixed.max_dev_examples: setting 'max_dev_examples'",
         "greater than or equal to 1"),
    Case("train-seed-negative", at("train", seed=-3), "train.seed: setting 'seed'", "greater than or equal to 0"),
    Case("final-seed-negative", at("final", seeds=[-1, 0]), "final.seeds.0: ", "greater than or equal to 0"),
    Case("final-seeds-empty", at("final", seeds=[]), "final.seeds: ", "list at least one"),
    Case("runs-per-trial-zero", at("final", runs_per_trial=0), "final.runs_per_trial: ", "greater than or equal to 1"),
    Case("cpus-zero", at("resources", cpus_per_worker=0), "resources.cpus_per_worker: ", "greater than 0"),
    Case("gpus-negative", at("resources", gpus_per_worker=-1), "resources.gpus_per_worker: ", "greater than or equal to 0"),
    Case("ray-cpus-zero", at("ray", num_cpus=0), "ray.num_cpus: ", "greater than or equal to 1"),
    Case("ray-max-failures-negative", at("ray", max_failures=-1), "ray.max_failures: ", "greater than or equal to 0"),
    # ---- a key the method does not have
    Case("finetune-searches-depth", method({"name": "finetune", "search": {"depth": {"type": "int", "low": 1, "high": 2}}}),
         "methods.0.search.depth: unknown key for method 'finetune'", "'depth' is an option of dynamic and ptuning_v2, not of finetune: drop it"),
    Case("finetune-fixed-prompt-length", method({"name": "finetune", "fixed": {"prompt_length": 8}}),
         "methods.0.fixed.prompt_length: unknown key for method 'finetune'", "is an option of"),
    Case("pt2-searches-tau0", at("methods.0.search", tau0={"type": "float", "low": 0.5, "high": 2.0}),
         "methods.0.search.tau0: unknown key for method 'ptuning_v2'", "'tau0' is an option of dynamic"),
    # ---- depth / layers beyond the backbone (read from its config: no weights)
    Case("layers-beyond-backbone", at("backbones.0", layers=12), f"backbones.0.layers: layers=12 is out of range: {MINILM} has 6 layers", "use 1..6"),
    Case("depth-fixed-beyond-kept", at("methods.0.fixed", depth=5), "methods.0.fixed.depth: depth=5 is out of range for a 2-layer backbone",
         "set depth to 1..2"),
    Case("depth-list-beyond-kept", at("methods.0.fixed", depth=[0, 7]), "methods.0.fixed.depth: depth layers [7] are not valid", "layer indices 0..1"),
    Case("depth-zero", at("methods.0.fixed", depth=0), "methods.0.fixed.depth: depth=0 is out of range", "set depth to 1..2"),
    Case("depth-range-beyond-kept", at("methods.0.search", depth={"type": "int", "low": 1, "high": 8}),
         "methods.0.search.depth.high: depth=8 is out of range for a 2-layer backbone", "set high to at most 2"),
    Case("depth-range-low-zero", at("methods.0.search", depth={"type": "int", "low": 0, "high": 2}),
         "methods.0.search.depth.low: depth=0 is out of range", "set low to at least 1"),
    Case("depth-choice-beyond-kept", at("methods.0.search", depth={"type": "choice", "values": [1, 4, None]}),
         "methods.0.search.depth.values: depth=4 is out of range", "drop 4 from values"),
    Case("depth-range-second-backbone", both(at("", backbones=[{"id": MINILM}, {"id": MINILM, "layers": 3}]),
                                             at("methods.0.search", depth={"type": "int", "low": 1, "high": 4})),
         "methods.0.search.depth.high: depth=4 is out of range for a 3-layer backbone", "backbones.1 (all-MiniLM-L6-v2-L3) keeps its first 3 layers"),
    Case("depth-beyond-whole-backbone", both(at("backbones.0", layers=None), at("methods.0.fixed", depth=7)),
         "methods.0.fixed.depth: depth=7 is out of range for a 6-layer backbone", "backbones.0 (all-MiniLM-L6-v2) has 6 layers"),
    Case("depth-dynamic-deep", method({"name": "dynamic", "fixed": {"base": "deep", "length": "task", "depth": 3}}),
         "methods.0.fixed.depth: depth=3 is out of range for a 2-layer backbone", "set depth to 1..2"),
    Case("depth-local-backbone", both(at("", backbones=[{"id": "./model", "label": "tiny"}]), at("methods.0.search", depth={"type": "int", "low": 1, "high": 4})),
         "methods.0.search.depth.high: depth=4 is out of range for a 3-layer backbone", "backbones.0 (tiny) has 3 layers",
         setup=config_dir(**TINY_BERT)),
    # ---- an output directory that cannot be written
    Case("output-under-a-file", at("", output_dir="{tmp}/afile/out"), "output_dir: {tmp}/afile/out cannot be created: {tmp}/afile is a file",
         "set output_dir (or pass --output-dir DIR)", setup=a_file),
    Case("output-is-a-file", at("", output_dir="{tmp}/afile"), "output_dir: {tmp}/afile exists and is not a directory", "set output_dir", setup=a_file),
    Case("mlflow-store-under-a-file", at("tracking", mlflow_uri="sqlite:///{tmp}/afile/mlflow.db"),
         "tracking.mlflow_uri: {tmp}/afile exists and is not a directory", "point the sqlite store at a directory", setup=a_file),
    Case("ray-storage-under-a-file", at("ray", storage_path="{tmp}/afile/ray"), "ray.storage_path: {tmp}/afile/ray cannot be created",
         "point storage_path at a directory", setup=a_file),
    Case("optuna-store-under-a-file", at("tracking", optuna_storage="sqlite:///{tmp}/afile/optuna.db"),
         "tracking.optuna_storage: {tmp}/afile exists and is not a directory", "point the sqlite store at a directory", setup=a_file),
    # ---- tracking stores on PostgreSQL (orchestrator.common.stores): the URL, the driver, the server
    Case("postgres-scheme", at("tracking", mlflow_uri="postgres://postgres@127.0.0.1/mlflow"),
         "tracking.mlflow_uri: 'postgres://postgres@127.0.0.1/mlflow': the PostgreSQL URL must start postgresql://", "write e.g. postgresql://"),
    Case("postgres-no-database", at("tracking", optuna_storage="postgresql://postgres@127.0.0.1:5432"),
         "tracking.optuna_storage: 'postgresql://postgres@127.0.0.1:5432' names no database", "add it after the host"),
    Case("optuna-storage-not-rdb", at("tracking", optuna_storage="redis://localhost:6379"),
         "tracking.optuna_storage: 'redis://localhost:6379' is not an Optuna RDB storage URL", "write sqlite:///optuna.db"),
    Case("postgres-one-database-for-both", at("tracking", mlflow_uri="postgresql://postgres@127.0.0.1:1/ptcore",
                                              optuna_storage="postgresql://postgres@localhost:1/ptcore"),
         "tracking.optuna_storage: is the database of tracking.mlflow_uri", "give Optuna its own"),
    Case("postgres-no-server", at("tracking", mlflow_uri="postgresql://postgres@127.0.0.1:1/mlflow"),
         "tracking.mlflow_uri: no PostgreSQL server answers at 127.0.0.1:1", "start it, or fix the host and port in the URL"),
    Case("postgres-no-driver", at("tracking", optuna_storage="postgresql://postgres@127.0.0.1:1/optuna"),
         "tracking.optuna_storage: postgresql+psycopg2://postgres@127.0.0.1:1/optuna needs the PostgreSQL driver psycopg2",
         "pip install 'psycopg2-binary>=2.9'", setup=no_psycopg2),
    Case("output-read-only", at("", output_dir="{tmp}/ro/out"), "output_dir: {tmp}/ro/out cannot be created: {tmp}/ro is not writable",
         "set output_dir", setup=read_only, skip="root writes into read-only directories" if os.geteuid() == 0 else None),
]

COMMANDS = {"validate": ["validate", "{study}"], "dry-run": ["study", "{study}", "--dry-run"], "study": ["study", "{study}"]}


# ------------------------------------------------------------------ the corpus: command lines

USAGE = "; usage: orchestrate"
CLI_CASES = [
    Cli("study-no-file", ["study"], "orchestrate study: the following arguments are required: file", f"{USAGE} study [-h]"),
    Cli("validate-no-file", ["validate"], "orchestrate validate: the following arguments are required: file", f"{USAGE} validate [-h]"),
    Cli("no-command", [], "orchestrate: the following arguments are required: command", f"{USAGE} [-h] [--version] {{run,"),
    Cli("command-typo", ["studdy", "x.yaml"], "orchestrate: argument command: invalid choice: 'studdy'", "choose from"),
    Cli("study-unknown-flag", ["study", "{study}", "--dryrun"], "orchestrate: unrecognized arguments: --dryrun", USAGE),
    Cli("study-no-such-file", ["study", "{tmp}/nope.yaml", "--dry-run"], "{tmp}/nope.yaml: no such study file", "check the path"),
    Cli("validate-a-directory", ["validate", "{tmp}"], "{tmp}: is a directory, not a study file", "pass the YAML file"),
    Cli("validate-second-file-bad", ["validate", "{study}", "{tmp}/second.yaml"], "{tmp}/second.yaml: budgett: unknown key", "did you mean 'budget'",
        stdout="ok: {study}: study 'bad'", extra=[("second.yaml", yaml.safe_dump({**BASE, "budgett": {}}))]),
    Cli("dry-run-output-dir-under-a-file", ["study", "{study}", "--dry-run", "--output-dir", "{tmp}/afile/x"],
        "{study}: --output-dir: {tmp}/afile/x cannot be created: {tmp}/afile is a file", "pass --output-dir DIR", setup=a_file),
    Cli("study-output-dir-under-a-file", ["study", "{study}", "--output-dir", "{tmp}/afile/x"], "{study}: --output-dir: ", "pass --output-dir DIR",
        setup=a_file),
    Cli("study-retry-without-resume", ["study", "{study}", "--retry-failed"], "--retry-failed continues a study", "use it with --resume"),
    Cli("run-no-task", ["run", "--method", "finetune"], "run: give --task", "or --config FILE with a task"),
    Cli("run-epochs-a-word", ["run", "--task", "superglue/cb", "--epochs", "x"], "orchestrate run: argument --epochs: invalid int value: 'x'", USAGE),
    Cli("run-epochs-zero", ["run", "--task", "superglue/cb", "--epochs", "0", "--output", "{tmp}/out"], "setting 'epochs': ", "greater than or equal to 1"),
    Cli("run-seed-negative", ["run", "--task", "superglue/cb", "--seed", "-1", "--output", "{tmp}/out"], "setting 'seed': ", "greater than or equal to 0"),
    Cli("run-layers-zero", ["run", "--task", "superglue/cb", "--layers", "0", "--output", "{tmp}/out"], "setting 'layers': ", "greater than or equal to 1"),
    Cli("run-max-train-negative", ["run", "--task", "superglue/cb", "--set", "max_train_examples=-5", "--output", "{tmp}/out"],
        "setting 'max_train_examples': ", "greater than or equal to 1"),
    Cli("run-task-typo", ["run", "--task", "superglue/cbb", "--output", "{tmp}/out"], "unknown task 'superglue/cbb'", "did you mean 'superglue/cb'"),
    Cli("run-output-under-a-file", ["run", "--task", "superglue/cb", "--data-dir", str(FIXTURES), "--output", "{tmp}/afile/run"],
        "--output {tmp}/afile/run: {tmp}/afile/run cannot be created: {tmp}/afile is a file", "choose another --output", setup=a_file),
    Cli("report-no-such-path", ["report", "{tmp}/nope"], "{tmp}/nope: no such study file or study output directory", "pass a study file"),
    Cli("report-dir-without-results", ["report", "{tmp}/empty"], "no results at {tmp}/empty/results.csv", "run `orchestrate study` first",
        setup=lambda tmp, mp: (tmp / "empty").mkdir()),
    Cli("report-invalid-yaml", ["report", "{study}"], "{study}: line 3: invalid YAML in tasks", "close the '['", study="name: bad\ntasks: [a\n"),
    Cli("report-study-without-name", ["report", "{study}"], "{study}: name: required key is missing", "add it", study="tasks: [superglue/cb]\n"),
    Cli("ui-invalid-study", ["ui", "{study}"], "{study}: budgett: unknown key 'budgett'", "did you mean 'budget'", study=at("", budgett={})),
    Cli("ui-dir-without-store", ["ui", "{tmp}/empty"], "{tmp}/empty: no mlflow.db here", "pass the study file or its output dir",
        setup=lambda tmp, mp: (tmp / "empty").mkdir()),
    Cli("ui-study-never-run", ["ui", "{study}"], "{tmp}/out/mlflow.db does not exist yet", "run the study first"),
    Cli("ui-postgres-no-server", ["ui", "{study}"], "{study}: tracking.mlflow_uri: no PostgreSQL server answers at 127.0.0.1:1",
        "start it, or fix the host and port", study=at("tracking", mlflow_uri="postgresql://postgres@127.0.0.1:1/mlflow")),
    Cli("ui-port-a-word", ["ui", "{study}", "--port", "http"], "orchestrate ui: argument --port: invalid int value: 'http'", USAGE),
    Cli("ls-unknown", ["ls", "models"], "orchestrate ls: argument what: invalid choice: 'models'", "choose from 'tasks', 'methods', 'presets', 'backbones'"),
]


# ------------------------------------------------------------------ running a case


def write_study(tmp: Path, study: Union[Mutate, str, bytes, None], name: str = "study.yaml") -> Path:
    path = tmp / name
    if isinstance(study, bytes):
        path.write_bytes(study)
        return path
    if isinstance(study, str):
        text = study
    else:
        raw = copy.deepcopy(BASE)
        if study is not None:
            study(raw)
        text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text.replace("{tmp}", str(tmp)), encoding="utf-8")
    return path


def ray_pids() -> set[int]:
    """Ray's daemons now running (empty without psutil: ``ray.is_initialized()`` still checks)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - installed with the bench extras (peft, accelerate)
        return set()
    pids = set()
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "") in RAY_PROCESSES:
            pids.add(p.pid)
    return pids


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A clean working directory, offline, with tripwires where a study or a run would start."""
    import ray

    def tripwire(*args, **kwargs):
        raise AssertionError("bad input reached the runner: a study was started")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PTCORE_DATA_DIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("orchestrator.execution.runner.run_study", tripwire)
    monkeypatch.setattr("ptcore.train.train", tripwire)
    before = ray_pids()
    yield tmp_path
    assert not ray.is_initialized(), "bad input started Ray"
    assert not (ray_pids() - before), "bad input started a Ray process"


def assert_one_error_line(err: str, prefix: str, fix: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith(f"error: {prefix}"), f"\n{line}\nshould start\nerror: {prefix}"
    assert fix in line, f"\n{line}\nshould name the fix: {fix!r}"
    return line


def assert_nothing_created(tmp: Path, out: Path) -> None:
    assert not out.exists(), f"bad input created the output directory {out}"
    assert not (tmp / "studies_out").exists()
    for pattern in ("mlflow.db", "mlruns", "mlartifacts", "optuna.db", "results.csv"):
        assert not list(tmp.rglob(pattern)), f"bad input created {pattern}"


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
@pytest.mark.parametrize("case", STUDY_CASES, ids=[c.id for c in STUDY_CASES])
def test_bad_study_file(case: Case, command: str, sandbox: Path, monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    tmp = sandbox
    if case.setup:
        case.setup(tmp, monkeypatch)
    path = write_study(tmp, case.study)
    argv = [a.replace("{study}", str(path)) for a in COMMANDS[command]]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert_one_error_line(err, f"{path}: {case.where.replace('{tmp}', str(tmp))}", case.fix.replace("{tmp}", str(tmp)))
    assert_nothing_created(tmp, tmp / "out")


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_command_line(case: Cli, sandbox: Path, monkeypatch, capsys):
    tmp = sandbox
    if case.setup:
        case.setup(tmp, monkeypatch)
    path = write_study(tmp, case.study)
    for name, text in case.extra:
        write_study(tmp, text, name)

    def fill(s: str) -> str:
        return s.replace("{study}", str(path)).replace("{tmp}", str(tmp))

    code = main([fill(a) for a in case.argv])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert_one_error_line(captured.err, fill(case.prefix), fill(case.fix))
    assert fill(case.stdout) in captured.out
    assert_nothing_created(tmp, tmp / "out")


def test_corpus_size():
    """The issue asks for at least 40 malformed inputs."""
    assert len(STUDY_CASES) + len(CLI_CASES) >= 40
    assert len({c.id for c in STUDY_CASES + CLI_CASES}) == len(STUDY_CASES) + len(CLI_CASES)


def test_the_base_study_is_valid(sandbox: Path, capsys):
    """Every case breaks one thing in a study that is otherwise fine (so each case fails for
    its own reason), and the dry run of that study prints its plan and creates nothing."""
    path = write_study(sandbox, None)
    assert main(["validate", str(path)]) == 0
    assert main(["study", str(path), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "data check   superglue/cb: train" in captured.out and captured.err == ""
    assert_nothing_created(sandbox, sandbox / "out")


def test_an_unchecked_hub_backbone_is_refused_offline_only_when_starting(sandbox: Path, capsys):
    """A hub id that is not in the local cache cannot be read here: ``validate`` and the dry
    run say so (a cluster study is validated on a laptop), ``study`` refuses to start with it
    while HF_HUB_OFFLINE=1 (every trial would fail to load it)."""
    path = write_study(sandbox, at("backbones.0", id="no-such-org/no-such-encoder"))
    assert main(["validate", str(path)]) == 0
    assert "warning: no-such-org/no-such-encoder: not in the Hugging Face cache" in capsys.readouterr().out
    assert main(["study", str(path), "--dry-run"]) == 0
    assert "warning      no-such-org/no-such-encoder: not in the Hugging Face cache" in capsys.readouterr().out
    assert main(["study", str(path)]) == 2
    assert_one_error_line(capsys.readouterr().err, f"{path}: backbones.0.id: no-such-org/no-such-encoder: not in the Hugging Face cache",
                          "download it first")
    assert_nothing_created(sandbox, sandbox / "out")


def test_subprocess_exits_2_with_one_line(tmp_path):
    """The real process, ``python -m orchestrator``: the plan of a study whose depth range
    runs past the backbone's kept layers, a study file with a YAML error (run for real: it
    cannot get anywhere, so no tripwire is needed out of process), and a call without its
    argument each exit 2 with one line on stderr, no traceback, no output dir, no Ray."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PTCORE_DATA_DIR", None)
    env.pop("RAY_ADDRESS", None)
    depth = write_study(tmp_path, at("methods.0.search", depth={"type": "int", "low": 1, "high": 4}), "depth.yaml")
    broken = write_study(tmp_path, "name: bad\ntasks: [superglue/cb\n", "broken.yaml")
    calls = [
        (["study", str(depth), "--dry-run"], f"{depth}: methods.0.search.depth.high: depth=4 is out of range for a 2-layer backbone",
         "set high to at most 2"),
        (["study", str(broken)], f"{broken}: line 3: invalid YAML in tasks", "close the '['"),
        (["validate"], "orchestrate validate: the following arguments are required: file", "usage: orchestrate validate"),
    ]
    before = ray_pids()
    for argv, prefix, fix in calls:
        proc = subprocess.run([sys.executable, "-m", "orchestrator", *argv], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert_one_error_line(proc.stderr, prefix, fix)
    assert not (ray_pids() - before)
    assert_nothing_created(tmp_path, tmp_path / "out")
