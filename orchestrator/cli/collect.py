"""``orchestrate collect DIR``: a mean ± std table over ``orchestrate run`` result files.

For ad-hoc grids run outside a study (a shell loop of ``orchestrate run --output ...``):
every ``result.json`` below DIR is one run, wherever it lies. Runs group by their
configuration less the seed: the hash of the resolved config (the result's ``config``, hashed
as :meth:`ptcore.config.RunConfig.config_hash` hashes it) without ``seed`` and
``data_seed``, the seed of the ``train_size`` sample, which a few-shot grid varies with the
seed (each seed trains on its own sample). Runs of two configurations are never averaged
together, and the seeds of one always are, whatever the directories are called.

A group is labelled by its task, its method and the settings in which it differs from the
other groups of that task and method: ``CB · P-Tuning v2 · lr=0.01, prompt length=16``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from ptcore.config import HASH_ONLY_IF_SET, flat_settings, hashed_settings, settings_hash
from ptcore.errors import PtcoreError

from orchestrator.cli.subcommand import Subcommand

if TYPE_CHECKING:
    import pandas as pd  # imported where a table is built: `orchestrate ls` and --help never pay for pandas
from orchestrator.common.labels import method_key, method_label, readable_params, task_labels
from orchestrator.ledger.cells import seed_stats

SEED_KEYS = ("seed", "data_seed")  # what varies between the seeds of one configuration
RESULT_KEYS = ("task", "method", "seed", "config", "dev", "trainable_pct", "wall_s")  # what collect reads (+ val or test)


def read_result(path: Path) -> dict[str, Any]:
    """One ``result.json``, checked for what collect reads (one error line naming the file)."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PtcoreError(f"{path}: not a readable JSON result ({e})") from None
    missing = [k for k in RESULT_KEYS if k not in r] if isinstance(r, dict) else list(RESULT_KEYS)
    if missing:
        raise PtcoreError(f"{path}: not an `orchestrate run` result.json (no {', '.join(map(repr, missing))})")
    if not (r.get("val") or r.get("test")):
        raise PtcoreError(f"{path}: no reported scores ('val' or 'test'); collect reads runs that report them")
    return r


def settings(r: dict[str, Any]) -> dict[str, Any]:
    """A run's configuration less its seeds: what its group hash is taken over."""
    return hashed_settings(r["config"], drop=SEED_KEYS)


def load_results(root: Path) -> pd.DataFrame:
    """One row per ``result.json`` below ``root``: its group (config hash less the seeds), label and scores."""
    rows, configs = [], {}
    for path in sorted(root.rglob("result.json")):
        r = read_result(path)
        split = "test" if r.get("test") else "val"
        config = settings(r)
        group = settings_hash(config)
        configs[group] = config
        rows.append(
            {
                "task": r["task"],
                "method": r["method"],
                "group": group,
                "seed": r["seed"],
                "data_seed": r["config"].get("data_seed", 0),
                "split": split,
                "score": 100 * r[split]["primary"],
                "dev": 100 * r["dev"]["primary"],
                "trainable_pct": r["trainable_pct"],
                "wall_s": r["wall_s"],
                "path": str(path.parent.relative_to(root)),
            }
        )
    if not rows:
        raise PtcoreError(f"no result.json below {root}; point collect at a directory of `orchestrate run --output` runs")
    import pandas as pd

    df = pd.DataFrame(rows)
    labels = group_labels(configs)
    df.insert(2, "label", df["group"].map(labels))
    return df


def flat(config: dict[str, Any]) -> dict[str, Any]:
    """The settings spelled as in a study file (:func:`ptcore.config.flat_settings`); the
    later-added settings at their defaults."""
    return flat_settings({**{k: v for k, v in HASH_ONLY_IF_SET.items() if k not in SEED_KEYS}, **config})


def group_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """group -> ``task · method · the settings that differ among that task and method's groups``."""
    labels = {}
    for group, config in configs.items():
        peers = [flat(c) for c in configs.values() if (c["task"], c["method"]) == (config["task"], config["method"])]
        mine = flat(config)
        differ = {k: mine.get(k) for k in sorted({k for p in peers for k in p})
                  if len({json.dumps(p.get(k), sort_keys=True) for p in peers}) > 1}
        parts = [task_label(config["task"]), method_label(config["method"])] + ([readable_params(differ)] if differ else [])
        labels[group] = " · ".join(parts)
    return labels


def task_label(task: str) -> str:
    """``superglue/cb`` -> ``CB``; a multi-task run's tasks joined by ``+``."""
    parts = task.split("+")
    names = task_labels(parts)
    return "+".join(names[t] for t in parts)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over each group's seeds (sample std, :func:`orchestrator.ledger.cells.seed_stats`;
    none for one seed), per reported split."""
    g = df.groupby(["task", "method", "label", "group", "split"], sort=False)
    out = g.agg(
        seeds=("seed", "count"),
        mean=("score", "mean"),
        std=("score", lambda xs: seed_stats(list(xs)).std),
        dev_mean=("dev", "mean"),
        trainable_pct=("trainable_pct", "mean"),
        wall_s=("wall_s", "mean"),
    ).reset_index()
    order = out.apply(lambda r: (r.task, method_key(r.method), r.label, r.split), axis=1)
    return out.loc[order.sort_values().index].reset_index(drop=True)


def render(summary: pd.DataFrame) -> str:
    """The summary as a GitHub markdown table, one row per group and split."""
    rows = [
        [
            r.label,
            r.group,
            r.split,
            f"{r.mean:.1f} ± {r.std:.1f}" if r.seeds > 1 else f"{r.mean:.1f}",
            r.seeds,
            f"{r.dev_mean:.1f}",
            f"{r.trainable_pct:.3f}",
            f"{r.wall_s:.0f}",
        ]
        for r in summary.itertuples()
    ]
    headers = ["configuration", "group hash", "split", "score (mean ± std)", "seeds", "dev (selection)", "% params", "wall s/run"]
    return tabulate(rows, headers=headers, tablefmt="github")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", help="directory holding `orchestrate run --output` runs (each a result.json), at any depth; "
                                     "runs group by config hash less seed and data_seed, whatever the directories are called")
    p.add_argument("--csv", default=None, help="also write the per-run rows (with their group and label) to this CSV")


def handle(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise PtcoreError(f"{root} is not a directory")
    df = load_results(root)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(render(summarize(df)))
    return 0


SUBCOMMAND = Subcommand("mean ± std over seeds, per configuration, of a directory of `orchestrate run` results", add_args, handle)
