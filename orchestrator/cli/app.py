"""``orchestrate``: the command line.

:func:`subcommands` lists every subcommand by name, importing each from its module
(:class:`~orchestrator.cli.subcommand.Subcommand`: help, add_arguments, handle); run, ls and env
live here.
Every user error (:class:`ptcore.errors.PtcoreError`) prints as one line on stderr and
exits with status 2; nothing half-written is left behind (writes are atomic).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Optional

from ptcore.errors import PtcoreError

from orchestrator.cli.subcommand import Subcommand



class UsageError(PtcoreError):
    """Bad command-line arguments: argparse's complaint, on one line like every other error."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written, and an option's default in its help where it has a real one (not
    None/False/empty) and the help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text or d in (None, False, [], argparse.SUPPRESS) or action.option_strings == []:
            return text
        return f"{text} (default: {d})" if text else f"default: {d}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse prints its usage and the error on two lines and exits; ours raises a
    :class:`UsageError` (the usage folded into the message), so :func:`main` prints one
    ``error:`` line and returns 2 like for any other bad input. Subparsers inherit it."""

    def error(self, message: str):
        usage = " ".join(self.format_usage().split())
        raise UsageError(f"{self.prog}: {message}; {usage} (more: {self.prog} --help)")


# ------------------------------------------------------------------ run

RUN_EPILOG = textwrap.dedent(
    """\
    examples:
      orchestrate run --task superglue/cb --method ptuning_v2 --model sentence-transformers/all-MiniLM-L6-v2 \\
          --epochs 20 --set prompt_length=16 --set lr=1e-2 --seed 0 --output runs/cb-pt2
      orchestrate run --task glue/sst2 --method finetune --set max_train_examples=4000 --output runs/sst2-ft
      orchestrate run --task superglue/rte --method ptuning_v2 --set depth=3 --set reparameterize=true

    --set KEY=VALUE sets any run setting (lr, batch_size, patience, pooling, max_train_examples, ...)
    or method option (prompt_length, depth, ...); `orchestrate ls methods` lists the options.
    Data: --data-dir DIR or $PTCORE_DATA_DIR (official file layout, see README); else the hub.
    """
)


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="e.g. superglue/cb (orchestrate ls tasks); several joined by + train one multi-task run (superglue/cb+glue/sst2); required unless --config gives it")
    from ptcore.methods import display_order

    p.add_argument("--method", default=None, help=f"{' | '.join(display_order())} (default ptuning_v2; orchestrate ls methods)")
    p.add_argument("--model", default=None, help="hub id or local dir (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--layers", type=int, default=None, help="keep the first k backbone layers")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 10)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--data-dir", default=None, help="data directory (default: $PTCORE_DATA_DIR)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any run setting or method option")
    p.add_argument("--output", default=None, help="directory for result.json and the checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the result.json and checkpoint already in --output")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="start from a run_config.json (a checkpoint's) or result.json (its resolved config): re-run it exactly; "
                   "--task/--method/--set still override")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="data-parallel processes (gloo; batch_size stays the global batch; see ptcore.distributed)")


def _epoch_line(line: str) -> None:
    """An epoch's line (loss, dev score) on stderr, above the progress bar if one is drawn: the
    dev scores stay on screen after the bar is gone."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def _train_rank(values: dict, output: Optional[str], progress: bool, log: bool) -> Optional[dict]:
    """One rank of ``orchestrate run --workers N``: the result from rank 0, None elsewhere."""
    import torch.distributed as dist

    from ptcore.config import make_run_config
    from ptcore.train import train

    main = dist.get_rank() == 0
    say = _epoch_line if log and main else None
    result = train(make_run_config(values), output=output, progress=progress and main, log=say)
    return result if main else None


def _config_file(path: str) -> dict:
    """The run settings in a ``run_config.json`` (a checkpoint's) or a ``result.json`` (its
    ``config``: the resolved settings, method defaults filled in)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise PtcoreError(f"--config {path}: no such file; give a run_config.json or result.json") from None
    except (OSError, ValueError) as e:
        raise PtcoreError(f"--config {path}: not a JSON file ({e}); give a run_config.json or result.json") from None
    if isinstance(raw, dict) and isinstance(raw.get("config"), dict):
        raw = raw["config"]  # a result.json
    if not isinstance(raw, dict) or "task" not in raw:
        raise PtcoreError(f"--config {path}: no run settings in it (expected a run_config.json or result.json with a task)")
    return dict(raw)


def run_config_from_args(args: argparse.Namespace):
    from ptcore.config import apply_overrides, make_run_config

    raw: dict = _config_file(args.config) if args.config else {}
    if args.task:
        raw["task"] = args.task
    if args.method:
        if raw.get("method") not in (None, args.method):
            raw["method_args"] = {}  # the file's options belong to its own method
        raw["method"] = args.method
    raw.setdefault("method", "ptuning_v2")
    if not raw.get("task"):
        raise PtcoreError("run: give --task (e.g. --task superglue/cb) or --config FILE with a task")
    for key in ("model", "layers", "epochs", "seed", "data_dir"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    return make_run_config(apply_overrides(raw, args.set))


def handle_run(args: argparse.Namespace) -> int:
    from ptcore.train import train

    cfg = run_config_from_args(args)
    if args.output and os.path.exists(os.path.join(args.output, "result.json")) and not args.overwrite:
        raise PtcoreError(f"{args.output}/result.json exists; choose another --output, or pass --overwrite to replace it")
    if args.output:
        from orchestrator.study import unwritable

        why = unwritable(Path(args.output).expanduser().absolute())
        if why:  # found now, not after the training
            raise PtcoreError(f"--output {args.output}: {why}; choose another --output (a directory you can write)")
    if args.workers < 1:
        raise PtcoreError(f"--workers {args.workers}: give 1 or more processes")
    if args.workers > 1:
        from ptcore.distributed import spawn

        result = spawn(args.workers, _train_rank, cfg.model_dump(), args.output, not args.no_progress, True)[0]
    else:
        result = train(cfg, output=args.output, progress=not args.no_progress, log=_epoch_line)
    summary = {
        "task": result["task"],
        "method": result["method"],
        "val": result.get("val"),
        "test": result.get("test"),
        "dev": result["dev"],
        "best_epoch": result["best_epoch"],
        "trainable_params": result["trainable_params"],
        "total_params": result["total_params"],
        "trainable_pct": round(result["trainable_pct"], 3),
        "wall_s": round(result["wall_s"], 1),
        "workers": result["workers"],
        "sync_bytes_per_step": result["sync_bytes_per_step"] or None,
        "precision": result["precision"],
    }
    print(json.dumps({k: v for k, v in summary.items() if v is not None}, indent=2))
    if args.output:
        print(f"wrote {os.path.join(args.output, 'result.json')}", file=sys.stderr)
    return 0


RUN = Subcommand("train one configuration in-process, or in N local data-parallel processes (no Ray)", add_run_args, handle_run)


# ------------------------------------------------------------------ ls


def _type_name(annotation) -> str:
    """``Optional[int]`` -> ``int | None``; ``Literal['a', 'b']`` -> ``'a' | 'b'``."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def add_ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["tasks", "methods", "backbones"])


def handle_ls(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from ptcore.tasks import TASKS

        rows = [(name, spec.kind, ",".join(spec.metrics), spec.description) for name, spec in TASKS.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]  # columns as wide as their longest entry (NER's too)
        for r in rows:
            print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    elif args.what == "methods":
        from ptcore.config import RunConfig, run_fields
        from ptcore.methods import METHODS, display_order

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
    else:
        from ptcore.backbones import ALIASES, PACKAGED, SUPPORTED_MODEL_TYPES, packaged_path

        for model_id in PACKAGED:
            where = packaged_path(model_id)
            print(f"{model_id:45s} {'offline: ' + str(where) if where else 'hub (package not installed)'}")
        print(f"aliases: {', '.join(f'{a} -> {b}' for a, b in ALIASES.items())}")
        print(f"any hub id or local directory of a supported family: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return 0


LS = Subcommand("list tasks, methods (with options) or backbones", add_ls_args, handle_ls)


# ------------------------------------------------------------------ env


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ptcore")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "unknown (not installed)"


def handle_env(args: argparse.Namespace) -> int:
    """What a bug report needs: versions, git commit, devices, data directory."""
    import platform

    from ptcore import runinfo

    git = runinfo.git_info()
    lines = [f"ptcore {_version()}  (git {git.get('commit') or '-'}{' dirty' if git.get('dirty') else ''})",
             f"platform {platform.platform()}  cpus {os.cpu_count()}"]
    lines += [f"{k:14s} {v}" for k, v in runinfo.versions().items()]
    try:
        import torch

        cuda = f"cuda {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no CUDA device"
        lines.append(f"{'devices':14s} {cuda}; torch threads {torch.get_num_threads()}")
    except Exception as e:  # pragma: no cover - broken torch: say so, it is what the report needs
        lines.append(f"{'devices':14s} torch failed to load: {e}")
    data = os.environ.get("PTCORE_DATA_DIR")
    lines.append(f"{'data dir':14s} {data + ' ($PTCORE_DATA_DIR)' if data else 'unset ($PTCORE_DATA_DIR): tasks load from the hub'}")
    lines.append(f"{'hub':14s} {'offline (HF_HUB_OFFLINE)' if os.environ.get('HF_HUB_OFFLINE') == '1' else 'online'}")
    print("\n".join(lines))
    return 0


ENV = Subcommand("print versions, git commit, devices and data directory (for bug reports)", lambda p: None, handle_env)


# ------------------------------------------------------------------ main


def subcommands() -> dict[str, Subcommand]:
    """Every subcommand, in the order ``--help`` lists them, each imported from its module."""
    from orchestrator.cli import collect, commands, report
    from orchestrator.cli import bench

    return {
        "run": RUN, "study": commands.STUDY, "validate": commands.VALIDATE, "ls": LS, "ui": commands.UI,
        "report": report.SUBCOMMAND, "collect": collect.SUBCOMMAND, "bench": bench.SUBCOMMAND, "env": ENV,
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="orchestrate",
        description="Prompt-tuning research at cluster scale: P-Tuning v2, dynamic prompting and fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in subcommands().items():
        p = sub.add_parser(
            name,
            help=cmd.help,
            description=cmd.help,
            epilog=RUN_EPILOG if name == "run" else None,
            formatter_class=HelpFormatter,
        )
        cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
        return subcommands()[args.command].handle(args)
    except PtcoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
