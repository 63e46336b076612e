"""``orchestrate collect DIR``: a mean ± std table over ``orchestrate run`` result files.

For ad-hoc grids run outside a study (a shell loop of ``orchestrate run --output
DIR/<task>/<label>/seed<k>``): every ``result.json`` below DIR is one row; rows group by
(task, label = the directory above the seed directory).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from ptcore.errors import PtcoreError

from .cli import command


def load_results(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.rglob("result.json")):
        r = json.loads(path.read_text())
        split = "test" if r.get("test") else "val"
        rows.append(
            {
                "task": r["task"],
                "label": path.parent.parent.name,
                "seed": r["seed"],
                "split": split,
                "score": 100 * r[split]["primary"],
                "dev": 100 * r["dev"]["primary"],
                "trainable_pct": r["trainable_pct"],
                "wall_s": r["wall_s"],
            }
        )
    if not rows:
        raise PtcoreError(f"no result.json below {root}; point collect at a directory of `orchestrate run --output` runs")
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["task", "label", "split"], sort=True)
    out = g.agg(
        seeds=("seed", "count"),
        mean=("score", "mean"),
        std=("score", "std"),
        dev_mean=("dev", "mean"),
        trainable_pct=("trainable_pct", "mean"),
        wall_s=("wall_s", "mean"),
    ).reset_index()
    return out.fillna({"std": 0.0})


def render(summary: pd.DataFrame) -> str:
    rows = [
        [
            r.task,
            r.label,
            r.split,
            f"{r.mean:.1f} ± {r.std:.1f}" if r.seeds > 1 else f"{r.mean:.1f}",
            r.seeds,
            f"{r.dev_mean:.1f}",
            f"{r.trainable_pct:.3f}",
            f"{r.wall_s:.0f}",
        ]
        for r in summary.itertuples()
    ]
    headers = ["task", "method", "split", "score (mean ± std)", "seeds", "dev (selection)", "% params", "wall s/run"]
    return tabulate(rows, headers=headers, tablefmt="github")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", help="directory holding <task>/<label>/seed<k>/result.json")
    p.add_argument("--csv", default=None, help="also write the per-run rows to this CSV")


def handle(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise PtcoreError(f"{root} is not a directory")
    df = load_results(root)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(render(summarize(df)))
    return 0


command("collect", "mean ± std table over a directory of `orchestrate run` results")((add_args, handle))
