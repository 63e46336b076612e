"""``orchestrate run``: train one configuration in this process, or in N local data-parallel
processes (no Ray), and print its summary; ``--output`` keeps result.json and the checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Optional

from ptcore.config import apply_overrides, make_run_config
from ptcore.errors import PtcoreError
from ptcore.methods import display_order

from orchestrator.cli.subcommand import Subcommand
from orchestrator.common.faults import set_logs_dir
from orchestrator.study import unwritable

EPILOG = textwrap.dedent(
    """\
    examples:
      orchestrate run --task superglue/cb --method ptuning_v2 --model sentence-transformers/all-MiniLM-L6-v2 \\
          --epochs 20 --set prompt_length=16 --set lr=1e-2 --seed 0 --output runs/cb-pt2
      orchestrate run --task glue/sst2 --method finetune --set max_train_examples=4000 --output runs/sst2-ft
      orchestrate run --task superglue/rte --method ptuning_v2 --set depth=3 --set reparameterize=true
      orchestrate run --task superglue/cb --set preset=dpt --epochs 30   # the DP reference's setup (orchestrate ls presets)

    --set KEY=VALUE sets any run setting (lr, batch_size, patience, pooling, max_train_examples, ...)
    or method option (prompt_length, depth, ...); `orchestrate ls methods` lists the options.
    --set preset=NAME fills in a named bundle of settings wherever the run gives none.
    Data: --data-dir DIR or $PTCORE_DATA_DIR (official file layout, see README); else the hub.
    """
)


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default=None, help="e.g. superglue/cb (orchestrate ls tasks); several joined by + train one multi-task run (superglue/cb+glue/sst2); required unless --config gives it")
    p.add_argument("--method", default=None, help=f"{' | '.join(display_order())} (default: the preset's where --set preset= names one, else ptuning_v2; orchestrate ls methods)")
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
    from tqdm.auto import tqdm  # deferred for startup time: only a training run draws a bar

    tqdm.write(line, file=sys.stderr)


def _train_rank(values: dict, output: Optional[str], progress: bool, log: bool) -> Optional[dict]:
    """One rank of ``orchestrate run --workers N``: the result from rank 0, None elsewhere."""
    import torch.distributed as dist  # deferred for startup time: torch (seconds) only when training

    from ptcore.train import train  # deferred for startup time: imports torch and transformers

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
    raw: dict = _config_file(args.config) if args.config else {}
    if args.task:
        raw["task"] = args.task
    if args.method:
        if raw.get("method") not in (None, args.method):
            raw["method_args"] = {}  # the file's options belong to its own method
        raw["method"] = args.method
    # no method given: a preset's, else RunConfig's default (ptuning_v2), so nothing given by default
    # outranks a preset (--set preset=dpt); likewise only the flags given go in
    if not raw.get("task"):
        raise PtcoreError("run: give --task (e.g. --task superglue/cb) or --config FILE with a task")
    for key in ("model", "layers", "epochs", "seed", "data_dir"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    return make_run_config(apply_overrides(raw, args.set))


def handle_run(args: argparse.Namespace) -> int:
    from ptcore.train import train  # deferred for startup time: imports torch and transformers

    cfg = run_config_from_args(args)
    if args.output and os.path.exists(os.path.join(args.output, "result.json")) and not args.overwrite:
        raise PtcoreError(f"{args.output}/result.json exists; choose another --output, or pass --overwrite to replace it")
    if args.output:
        why = unwritable(Path(args.output).expanduser().absolute())
        if why:  # found now, not after the training
            raise PtcoreError(f"--output {args.output}: {why}; choose another --output (a directory you can write)")
    if args.workers < 1:
        raise PtcoreError(f"--workers {args.workers}: give 1 or more processes")
    if args.output:
        set_logs_dir(Path(args.output).expanduser().absolute() / "logs")  # a fatal error's traceback
    if args.workers > 1:
        from ptcore.distributed import spawn  # deferred for startup time: imports torch

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


SUBCOMMAND = Subcommand(
    "train one configuration in-process, or in N local data-parallel processes (no Ray)", add_run_args, handle_run, EPILOG,
)
