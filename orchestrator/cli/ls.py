"""``orchestrate ls tasks|methods|presets|backbones``: list the tasks, the methods with their
options and the run settings, the presets with their settings, or the backbones; loads no torch."""

from __future__ import annotations

import argparse
import types
import typing

from ptcore.backbones import ALIASES, PACKAGED, SUPPORTED_MODEL_TYPES, packaged_path
from ptcore.config import RunConfig, run_fields, set_spelling
from ptcore.methods import METHODS, display_order
from ptcore.presets import PRESETS

from orchestrator.cli.subcommand import Subcommand


def _type_name(annotation) -> str:
    """``Optional[int]`` -> ``int | None``; ``Literal['a', 'b']`` -> ``'a' | 'b'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def add_ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["tasks", "methods", "presets", "backbones"])


def handle_ls(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from ptcore.tasks import TASKS  # deferred for startup time: loads every task module, which only `ls tasks` needs

        rows = [(name, spec.kind, ",".join(spec.metrics), spec.description) for name, spec in TASKS.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]  # columns as wide as their longest entry (NER's too)
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    elif args.what == "methods":
        for name in display_order():
            m = METHODS.get(name)
            print(f"{name:14s} {m.description}  (default lr {m.config_cls.default_lr:g})  reported as {m.label!r}")
            for field, info in m.config_cls.model_fields.items():
                print(f"    {field}: {_type_name(info.annotation)} = {info.default!r}" + (f"  # {info.description}" if info.description else ""))
        print("run settings (every method; --set KEY=VALUE, or a study's train:):")
        for field in sorted(run_fields()):
            info = RunConfig.model_fields[field]
            default = "required" if info.is_required() else repr(info.default)
            print(f"    {field}: {_type_name(info.annotation)} = {default}" + (f"  # {info.description}" if info.description else ""))
    elif args.what == "presets":
        for name, preset in PRESETS.items():
            print(f"{name:14s} {preset.description}  (--set preset={name}; explicit settings win)")
            for key, value in preset.settings.items():  # as --set spells them
                print(f"    {key}={set_spelling(value)}")
            for task, fmt in preset.tasks.items():  # single-task runs of that task
                for key, value in fmt.items():
                    print(f"    {task}: {key}={set_spelling(value)}")
            for note in preset.notes:
                print(f"    note: {note}")
    else:
        for model_id in PACKAGED:
            where = packaged_path(model_id)
            print(f"{model_id:45s} {'offline: ' + str(where) if where else 'hub (package not installed)'}")
        print(f"aliases: {', '.join(f'{a} -> {b}' for a, b in ALIASES.items())}")
        print(f"any hub id or local directory of a supported family: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return 0


SUBCOMMAND = Subcommand("list tasks, methods (with options), presets (with settings) or backbones", add_ls_args, handle_ls)
