"""The regimes table: each task x method in every data regime of the study (full, few-shot,
multi-task), mean ± std over the final runs' seeds (in the few-shot regime each seed draws its
own training sample, so the spread is the data's as well as the initialization's).

A multi-task run trains every task at once; its row in the ledger carries each task's score
as ``<split>_<task>_primary`` (``superglue/cb`` -> ``val_superglue-cb_primary``), which this
table reads back per task.
"""

from __future__ import annotations


from dataclasses import dataclass, field
from typing import Optional

from ptcore.config import task_key

from orchestrator.study import Regime
from orchestrator.common.labels import span
from orchestrator.ledger.cells import seed_runs, seed_stats, study_finals


@dataclass
class RegimeCell:
    values: list[float] = field(default_factory=list)  # x100, one per seed

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return seed_stats(self.values).mean

    @property
    def std(self) -> Optional[float]:
        return seed_stats(self.values).std


@dataclass
class RegimeTable:
    regimes: list[str]  # column order: as the study lists them
    kinds: dict[str, str]  # regime label -> full / few_shot / multitask
    tasks: list[str]
    methods: list[str]
    cells: dict[tuple[str, str, str], RegimeCell]  # (task, method, regime) -> scores
    train_sizes: dict[tuple[str, str], str]  # (task, regime) -> "32" or "1,000" (a span if runs differ)
    dev_sizes: dict[tuple[str, str], str]
    split: dict[str, str]  # task -> the reported split (val / test)


def _regime_order(config: dict, rows: list[dict]) -> tuple[list[str], dict[str, str]]:
    order, kinds = [], {}
    for raw in config.get("regimes") or []:
        try:
            r = Regime.model_validate(raw)  # the study file's own schema names it, as the cells were named
        except ValueError:
            continue
        order.append(r.display())
        kinds[r.display()] = r.name
    for r in rows:  # regimes in the ledger the study file no longer lists
        if r["regime"] not in order:
            order.append(r["regime"])
            kinds[r["regime"]] = "multitask" if "+" in r.get("task", "") else "full"
    return order, kinds


def run_score(r: dict, task: str, split: str) -> Optional[float]:
    """A final run's primary score (0-1) on ``task``'s reported ``split``: its own column, or, for
    a multi-task run, the task's ``<split>_<task>_primary``."""
    if "+" in r.get("task", ""):
        return r.get(f"{split}_{task_key(task)}_primary")
    return r.get(f"{split}_primary")


def build_regimes(rows: list[dict], config: dict, task_split: dict[str, str], method_key=lambda m: m) -> Optional[RegimeTable]:
    """The table, or None when the study ran one regime (the main tables say it all)."""
    counted = study_finals(rows)
    by_cell: dict = {}
    for r in counted:
        by_cell.setdefault(r.get("cell"), []).append(r)
    finals = [r for cell_rows in by_cell.values() for r in seed_runs(cell_rows)]  # one ok run per seed and cell
    regimes, kinds = _regime_order(config, counted)
    if len(regimes) < 2:
        return None
    cells: dict[tuple[str, str, str], RegimeCell] = {}
    train_n: dict[tuple[str, str], list[int]] = {}
    dev_n: dict[tuple[str, str], list[int]] = {}
    tasks: list[str] = []
    for r in sorted(finals, key=lambda r: (r.get("seed") is None, r.get("seed") or 0)):
        data = r.get("data") or {}
        for t in r["task"].split("+"):
            multi = "+" in r["task"]
            v = run_score(r, t, task_split.get(t, "val"))
            if v is None:
                continue
            if t not in tasks:
                tasks.append(t)
            method = r.get("method_label") or r.get("method", "")
            cells.setdefault((t, method, r["regime"]), RegimeCell()).values.append(100.0 * v)
            sizes = ((data.get("task_sizes") or {}).get(t) if multi else data.get("sizes")) or {}
            if isinstance(sizes.get("train"), int):
                train_n.setdefault((t, r["regime"]), []).append(sizes["train"])
            if isinstance(sizes.get("dev"), int):
                dev_n.setdefault((t, r["regime"]), []).append(sizes["dev"])
    methods = sorted({m for _, m, _ in cells}, key=method_key)
    return RegimeTable(
        regimes=regimes, kinds=kinds, tasks=tasks, methods=methods, cells=cells,
        train_sizes={k: span(v) for k, v in train_n.items()}, dev_sizes={k: span(v) for k, v in dev_n.items()},
        split={t: task_split.get(t, "val") for t in tasks},
    )


def cell_text(c: Optional[RegimeCell], pm: str = " ± ") -> str:
    if c is None or c.mean is None:
        return "–"
    return f"{c.mean:.1f}{pm}{c.std:.1f} ({c.n})" if c.std is not None else f"{c.mean:.1f} ({c.n})"


def regimes_table(rt: RegimeTable, task_label, method_label, pm: str = " ± ") -> tuple[list[str], list[list[str]]]:
    header = ["Task", "Method"] + [f"{g} (train / dev)" for g in rt.regimes]
    body = []
    for t in rt.tasks:
        sizes = ["", "examples"] + [f"{rt.train_sizes.get((t, g), '–')} / {rt.dev_sizes.get((t, g), '–')}" for g in rt.regimes]
        sizes[0] = task_label(t)
        body.append(sizes)
        for m in rt.methods:
            body.append(["", method_label(m)] + [cell_text(rt.cells.get((t, m, g)), pm) for g in rt.regimes])
    return header, body


def regimes_caption(rt: RegimeTable, task_label) -> str:
    splits = "; ".join(f"{task_label(t)}: {rt.split[t]}" for t in rt.tasks)
    kinds = {
        "full": "the task's training split (or a stratified sample of it), selection on its dev split",
        "few_shot": "a stratified sample drawn per seed (its data seed), selection on an equally small dev set carved from "
        "the training data outside the sample",
        "multitask": "one run trains every task at once (shared prompts, a head per task, batches mixed across tasks), "
        "selection on the mean dev score; the same examples per task as listed",
    }
    what = " ".join(f"{g}: {kinds.get(rt.kinds.get(g, ''), 'as recorded')}." for g in rt.regimes)
    return (f"Regimes. Primary metric ×100 on each task's whole reported split ({splits}), mean ± std over final runs "
            f"(count in brackets; few-shot seeds also redraw the sample). The first line of each task gives the training / "
            f"selection examples per run. {what}")
