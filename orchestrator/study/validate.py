"""Validation: pydantic errors rewritten as one line with the fix, then names and keys
against ptcore's registries, real RunConfigs, regimes and depths (:func:`parse_study`)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from orchestrator.study.backbones import backbone_family, backbone_layers
from orchestrator.study.plan import LoadedStudy, _resolve_model, compose_run, final_seeds
from orchestrator.study.schema import (
    CELL_KEYS,
    FINAL_KEYS,
    REGIME_KEYS,
    STUDY_KEYS,
    FieldError,
    MethodSpec,
    SearchParam,
    Study,
    StudyError,
    _fmt_loc,
)
from ptcore.config import make_run_config, run_fields, run_spec, split_settings
from ptcore.errors import ConfigError
from ptcore.methods import METHODS, method_fields
from ptcore.methods.layers import resolve_layers
from ptcore.methods.registration import method_family_problem
from ptcore.tasks import TASKS
from ptcore.tasks.text_kinds import check_format


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
        if not errors:
            errors.extend(_family_errors(where, m, study, base_dir, values))
    return errors


def _family_errors(where: str, m, study: Study, base_dir, values: dict) -> list[tuple[str, str]]:
    """The method, and each task in the run's format, on each backbone family it meets (read
    from the backbones' configs; a hub id not read here is checked when its runs start). Each
    task's run is built for that task: a preset gives some tasks their own template."""
    cfg = make_run_config(values)
    for bb in study.backbones:
        family = backbone_family(_resolve_model(bb.id, base_dir))
        if family is None or not m.runs_on(bb):
            continue
        why = method_family_problem(m.name, family) or cfg.method_args.family_problem(family, bb.display())
        if why:
            return [(f"{where}.name", f"on backbone {bb.display()}: {why}")]
        for task in study.tasks:
            task = task.strip().lower()
            try:
                task_cfg = make_run_config({**values, "task": task})
            except ConfigError as e:
                return [(f"{where}.fixed", f"task {task}: {e}")]
            why = check_format(run_spec(task_cfg, task), task_cfg.format, family)
            if why:
                return [(f"{where}", f"on backbone {bb.display()}: {why}")]
    return []


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
