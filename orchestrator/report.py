"""``orchestrate report``: result tables (markdown, LaTeX) and a scale-curve plot of a study.

Reads ``<output_dir>/results.csv`` (one row per search trial and per final seed, written by
``orchestrate study``) and writes, into ``reports/<study>/`` by default:

- ``results.md``: GitHub markdown (pipe tables);
- ``results.tex``: a standalone LaTeX document (``article`` + ``booktabs``);
- ``scale.png`` / ``scale.pdf``: metric vs backbone size, one line per method.

Protocol of the numbers: selection (epochs, hyperparameters) happened on ``dev``, carved
from the official training data; it is never reported. Each task is reported on its
official validation split (``val_primary``), or on its official labelled test split
(``test_primary``) where the task has one (the NER tasks) or lacks ``val``.

Output is deterministic (sorted rows, fixed float formats, no timestamps) so reports can be
compared with golden files; the provenance footer (package versions, git commit) comes from
the results rows and from ``provenance=`` (default: :func:`ptcore.runinfo.versions`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from ptcore.errors import PtcoreError

from .results import STATUSES

OK, PRUNED, ERROR = STATUSES  # the statuses the ledger (results.csv) writes

MISSING = "–"  # en dash: a cell with no successful final run
METHOD_ORDER = ("finetune", "prompt_tuning", "ptuning_v2", "dynamic")
METHOD_LABELS = {
    "finetune": "Fine-tuning",
    "prompt_tuning": "Prompt tuning",
    "ptuning_v2": "P-Tuning v2",
    "dynamic": "Dynamic prompting",
}
BASELINE = "finetune"
METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "f1": "F1",
    "f1a": "F1a",
    "em": "EM",
    "mcc": "MCC",
    "pearson": "Pearson r",
    "spearman": "Spearman rho",
    "entity_f1": "entity F1",
    "squad_f1": "F1",
}
# config keys that differ between trials without being hyperparameters
NOT_HYPERPARAMETERS = {"seed", "output", "output_dir", "trial_id", "run_name", "data_dir", "experiment", "storage_path"}
ALPHA = 0.05
DAGGER = "†"


# ------------------------------------------------------------------ loading


@dataclass
class StudyResults:
    name: str
    output_dir: Path
    config: dict  # the study file (may be empty)
    rows: list[dict]  # results.csv rows, numeric columns parsed


NUMERIC = (
    "layers", "total_params", "seed", "dev_primary", "val_primary", "test_primary", "best_epoch",
    "epochs_run", "trainable_params", "trainable_pct", "checkpoint_bytes", "wall_s", "train_s",
)


def _num(v: Any) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PtcoreError(f"cannot read study file {path}: {e}") from e
    if not isinstance(data, dict):
        raise PtcoreError(f"study file {path} is not a mapping")
    return data


def _read_rows(csv_path: Path) -> list[dict]:
    import pandas as pd

    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise PtcoreError(f"cannot read {csv_path}: {e}") from e
    rows = []
    for rec in df.to_dict("records"):
        row: dict[str, Any] = {k: (v if isinstance(v, str) else "") for k, v in rec.items()}
        for col in list(row):
            if col in NUMERIC or col.startswith("val_") or col.startswith("test_") or col.startswith("dev_"):
                row[col] = _num(row[col])
        for col in ("layers", "total_params", "seed"):
            if row.get(col) is not None:
                row[col] = int(row[col])
        row["trial_id"] = (row.get("trial_id") or "").strip()  # Ray trial ids are strings
        row["status"] = (row.get("status") or "").strip().lower()
        row["phase"] = (row.get("phase") or "").strip().lower()
        rows.append(row)
    return rows


def load_study(study: str | os.PathLike) -> StudyResults:
    """A study file (yaml: ``name``, ``output_dir``) or a study output directory."""
    path = Path(study)
    if path.is_dir():
        out = path
        config = _read_yaml(out / "study.yaml") if (out / "study.yaml").is_file() else {}
        name = config.get("name")
    elif path.is_file():
        config = _read_yaml(path)
        name = config.get("name")
        if not name:
            raise PtcoreError(f"study file {path} has no `name`")
        out = Path(config.get("output_dir") or f"studies_out/{name}")
        if not out.is_absolute() and not out.is_dir() and (path.parent / out).is_dir():
            out = path.parent / out
    else:
        raise PtcoreError(f"{study}: no such study file or study output directory")
    csv_path = out / "results.csv"
    if not csv_path.is_file():
        raise PtcoreError(f"no results at {csv_path}; run `orchestrate study` first (or pass the study output directory)")
    rows = _read_rows(csv_path)
    if not rows:
        raise PtcoreError(f"{csv_path} has no rows")
    if not name:
        names = sorted({r.get("study", "") for r in rows if r.get("study")})
        name = names[0] if names else out.resolve().name
    return StudyResults(name=str(name), output_dir=out, config=config, rows=rows)


# ------------------------------------------------------------------ labels and formats


def human_count(n: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    for div, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f} B"


def fmt_pct(v: float) -> str:
    if v >= 1:
        return f"{v:.1f}"
    s = f"{v:.2g}"
    return f"{v:.1e}" if "e" in s else s


def fmt_seconds(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def method_label(m: str) -> str:
    return METHOD_LABELS.get(m, m)


def method_key(m: str) -> tuple:
    return (METHOD_ORDER.index(m), "") if m in METHOD_ORDER else (len(METHOD_ORDER), m)


def metric_label(m: Optional[str]) -> str:
    return METRIC_LABELS.get(m, m) if m else "primary metric"


def _task_spec(task: str):
    try:
        from ptcore.tasks import TASKS

        return TASKS.get(task) if task in TASKS else None
    except Exception:  # noqa: BLE001 - a label is cosmetic; never fail the report on it
        return None


# display names where the data directory's name is not the usual one
TASK_LABELS = {
    "ner/wnut17": "WNUT-17",
    "ner/conll2003": "CoNLL-2003",
    "ner/conll2004": "CoNLL-2004",
    "squad/v1.1": "SQuAD",
    "squad": "SQuAD",
}


def _task_labels(tasks: Sequence[str]) -> dict[str, str]:
    labels = {}
    for t in tasks:
        spec = _task_spec(t)
        if t in TASK_LABELS:
            labels[t] = TASK_LABELS[t]
        elif spec is not None:
            labels[t] = spec.local.path.rstrip("/").split("/")[-1]
        else:
            labels[t] = t.split("/")[-1]
    counts: dict[str, int] = {}
    for v in labels.values():
        counts[v] = counts.get(v, 0) + 1
    for t, v in list(labels.items()):
        if counts[v] > 1:  # glue/rte vs superglue/rte
            labels[t] = f"{t.split('/')[0]}/{v}" if "/" in t else t
    return labels


def _primary_metric(task: str, rows: list[dict]) -> Optional[str]:
    spec = _task_spec(task)
    if spec is not None:
        return spec.primary
    # infer: the val_<metric> column that equals val_primary on every row that has both
    candidates = None
    for r in rows:
        if r.get("val_primary") is None:
            continue
        match = {
            k[4:] for k, v in r.items()
            if k.startswith("val_") and k != "val_primary" and isinstance(v, float) and abs(v - r["val_primary"]) < 1e-12
        }
        candidates = match if candidates is None else candidates & match
    return sorted(candidates)[0] if candidates else None


def backbone_short(backbone: str) -> str:
    base = backbone.rstrip("/").split("/")[-1] or backbone
    return base[4:] if base.startswith("all-") else base


# ------------------------------------------------------------------ statistics


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (ddof=1); None for fewer than 2 values."""
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def paired_pvalue(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[Optional[float], int]:
    """Two-sided paired t-test (scipy.stats.ttest_rel) over the seeds both have: (p, n pairs)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None, len(seeds)
    xa = [a[s] for s in seeds]
    xb = [b[s] for s in seeds]
    diffs = [x - y for x, y in zip(xa, xb)]
    if max(diffs) - min(diffs) < 1e-12:  # zero variance of the differences: t undefined
        return None, len(seeds)
    from scipy.stats import ttest_rel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(ttest_rel(xa, xb).pvalue)
    return (None if math.isnan(p) else p), len(seeds)


@dataclass
class Cell:
    seeds: dict[int, float] = field(default_factory=dict)  # seed -> metric x100
    failed: int = 0
    p: Optional[float] = None  # vs fine-tuning
    pairs: int = 0

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> Optional[float]:
        return _mean([self.seeds[s] for s in sorted(self.seeds)]) if self.seeds else None

    @property
    def std(self) -> Optional[float]:
        return _std([self.seeds[s] for s in sorted(self.seeds)])


@dataclass
class Group:
    backbone: str
    layers: Optional[int]
    params: Optional[int]

    @property
    def label(self) -> str:
        bits = []
        if self.layers is not None:
            bits.append(f"{self.layers} layer" + ("" if self.layers == 1 else "s"))
        if self.params is not None:
            bits.append(human_count(self.params))
        return backbone_short(self.backbone) + (f" ({', '.join(bits)})" if bits else "")


@dataclass
class Row:
    group: Group
    method: str
    cells: dict[str, Cell]  # task -> cell
    avg: Cell  # per-seed averages over tasks (seeds complete on every task)
    avg_mean: Optional[float]  # mean over tasks of the task means (all tasks present)
    delta: Optional[float] = None
    pct: Optional[float] = None
    ckpt: Optional[float] = None
    train_s: Optional[float] = None


@dataclass
class SearchCell:
    group: Group
    task: str
    method: str
    trials: int
    stopped: int
    failed: int
    best_trial: Optional[str]
    best_params: str


@dataclass
class Report:
    name: str
    tasks: list[str]
    task_labels: dict[str, str]
    task_split: dict[str, str]  # "val" | "test"
    task_metric: dict[str, Optional[str]]
    groups: list[Group]
    methods: list[str]
    rows: list[Row]
    seeds: list[int]
    budget: dict
    search: list[SearchCell]
    tested: bool  # some cell had >= 2 paired seeds
    commits: list[str]
    versions: dict[str, str]
    notes: list[str]
    versions_source: str = ""  # "" (recorded/injected) or " (report environment)"

    @property
    def single_seed(self) -> bool:
        return len(self.seeds) <= 1


def _group_key(r: dict) -> tuple:
    return (r.get("backbone") or "?", r.get("layers"))


def _max_epochs(row: dict, budget: Mapping) -> Optional[float]:
    try:
        cfg = json.loads(row.get("config_json") or "{}")
    except json.JSONDecodeError:
        cfg = {}
    for key in ("epochs", "max_epochs"):
        if isinstance(cfg, dict) and _num(cfg.get(key)) is not None:
            return _num(cfg[key])
    for key in ("max_epochs", "epochs", "max_t"):
        if _num(budget.get(key)) is not None:
            return _num(budget[key])
    return None


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (int, str)):
        return str(v)
    return json.dumps(v, sort_keys=True)


def _natural(s: str) -> tuple:
    """Sort key: numeric ids by value, then other ids as text."""
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _search_summary(rows: list[dict], groups: dict[tuple, Group], budget: Mapping, task_order, method_order) -> list[SearchCell]:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["phase"] == "search":
            cells.setdefault((_group_key(r), r.get("task", ""), r.get("method", "")), []).append(r)
    out = []
    for (gk, task, method), trials in cells.items():
        trials = sorted(trials, key=lambda r: _natural(r["trial_id"]))
        stopped = 0
        for r in trials:
            if r["status"] == PRUNED:
                stopped += 1
            elif r["status"] == "ok":
                mx = _max_epochs(r, budget)
                if mx is None:
                    mx = max((t["epochs_run"] for t in trials if t.get("epochs_run") is not None), default=None)
                if mx is not None and r.get("epochs_run") is not None and r["epochs_run"] < mx:
                    stopped += 1
        failed = sum(r["status"] == ERROR for r in trials)
        scored = [r for r in trials if r["status"] in (OK, PRUNED) and r.get("dev_primary") is not None]
        best = max(scored, key=lambda r: r["dev_primary"]) if scored else None  # first max: lowest trial id
        configs = []
        for r in trials:
            try:
                c = json.loads(r.get("config_json") or "{}")
            except json.JSONDecodeError:
                c = {}
            configs.append(_flatten(c) if isinstance(c, dict) else {})
        keys = sorted({k for c in configs for k in c} - NOT_HYPERPARAMETERS)
        varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
        params = MISSING
        if best is not None and varying:
            bc = configs[trials.index(best)]
            params = ", ".join(f"{k}={_fmt_value(bc.get(k))}" for k in varying)
        out.append(
            SearchCell(
                group=groups[gk], task=task, method=method, trials=len(trials), stopped=stopped, failed=failed,
                best_trial=(best["trial_id"] or None) if best else None, best_params=params,
            )
        )
    gorder = list(groups)
    out.sort(key=lambda c: (gorder.index(_group_key({"backbone": c.group.backbone, "layers": c.group.layers})),
                            task_order.index(c.task) if c.task in task_order else len(task_order), c.task,
                            method_key(c.method)))
    return out


def build_report(data: StudyResults, provenance: Optional[Mapping] = None) -> Report:
    # a method listed twice in a study (e.g. dynamic prompting variants) is told apart by its label
    rows = [{**r, "method": r.get("method_label") or r.get("method", "")} for r in data.rows]
    finals = [r for r in rows if r["phase"] == "final"]
    tasks = sorted({r.get("task", "") for r in rows if r.get("task")})
    methods = sorted({r.get("method", "") for r in rows if r.get("method")}, key=method_key)

    # backbone groups, smallest first; size = the smallest total_params seen (bare backbone + head)
    gparams: dict[tuple, list[int]] = {}
    for r in rows:
        gparams.setdefault(_group_key(r), [])
        if r.get("total_params") is not None:
            gparams[_group_key(r)].append(r["total_params"])
    groups = {
        k: Group(backbone=k[0], layers=k[1], params=min(v) if v else None)
        for k, v in sorted(gparams.items(), key=lambda kv: (min(kv[1]) if kv[1] else math.inf, kv[0][0], kv[0][1] or 0))
    }

    # reported split per task: the official test split where the task has one (NER), else val
    task_split = {}
    for t in tasks:
        has_test = any(r.get("test_primary") is not None for r in finals if r.get("task") == t)
        has_val = any(r.get("val_primary") is not None for r in finals if r.get("task") == t)
        task_split[t] = "test" if has_test or not has_val else "val"
    task_metric = {t: _primary_metric(t, [r for r in rows if r.get("task") == t]) for t in tasks}
    task_labels = _task_labels(tasks)

    final_cfg = data.config.get("final") if isinstance(data.config.get("final"), dict) else {}
    seeds_cfg = final_cfg.get("seeds") if final_cfg else None
    if isinstance(seeds_cfg, list) and seeds_cfg:
        seeds = [int(s) for s in seeds_cfg]
    else:
        seeds = sorted({r["seed"] for r in finals if r.get("seed") is not None})

    notes: list[str] = []
    table: list[Row] = []
    by_group: dict[tuple, dict[str, Row]] = {}
    for gk, group in groups.items():
        for m in methods:
            mine = [r for r in finals if _group_key(r) == gk and r.get("method") == m]
            cells = {}
            for t in tasks:
                cell = Cell()
                for r in mine:
                    if r.get("task") != t:
                        continue
                    v = r.get(f"{task_split[t]}_primary")
                    if r["status"] == "ok" and v is not None and r.get("seed") is not None:
                        cell.seeds[r["seed"]] = 100.0 * v
                    else:
                        cell.failed += 1
                cells[t] = cell
            complete = sorted(set.intersection(*(set(c.seeds) for c in cells.values()))) if cells else []
            avg = Cell(seeds={s: _mean([cells[t].seeds[s] for t in tasks]) for s in complete})
            means = [cells[t].mean for t in tasks]
            avg_mean = _mean(means) if means and all(x is not None for x in means) else None
            ok = [r for r in mine if r["status"] == "ok"]

            def avg_of(col: str, rs: Iterable[dict] = ok) -> Optional[float]:
                xs = [r[col] for r in rs if r.get(col) is not None]
                return _mean(xs) if xs else None

            train = avg_of("train_s")
            row = Row(
                group=group, method=m, cells=cells, avg=avg, avg_mean=avg_mean,
                pct=avg_of("trainable_pct"), ckpt=avg_of("checkpoint_bytes"),
                train_s=train if train is not None else avg_of("wall_s"),
            )
            table.append(row)
            by_group.setdefault(gk, {})[m] = row
            for t in tasks:
                c = cells[t]
                where = f"{method_label(m)} on {task_labels[t]}, {group.label}"
                if c.n == 0:
                    runs = sum(1 for r in mine if r.get("task") == t)
                    notes.append(f"{where}: no successful final run" + (f" ({c.failed} failed)" if runs else " (not run)"))
                elif len(seeds) > 1 and c.n < len(seeds):
                    missing = sorted(set(seeds) - set(c.seeds))
                    notes.append(f"{where}: {c.n} of {len(seeds)} seeds (missing seed{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(map(str, missing))})")

    # fine-tuning baseline: delta of the average, paired tests by seed
    tested = False
    for gk, rs in by_group.items():
        ft = rs.get(BASELINE)
        if ft is None:
            continue
        for m, row in rs.items():
            if m == BASELINE:
                continue
            if row.avg_mean is not None and ft.avg_mean is not None:
                row.delta = row.avg_mean - ft.avg_mean
            for c, base in [(row.cells[t], ft.cells[t]) for t in tasks] + [(row.avg, ft.avg)]:
                c.p, c.pairs = paired_pvalue(c.seeds, base.seeds)
                tested = tested or c.pairs >= 2

    prov = dict(provenance or {})
    commit = prov.get("git_commit")
    if commit:
        commits = [commit] if isinstance(commit, str) else sorted(commit)
    else:
        commits = sorted({r.get("git_commit", "").strip() for r in rows if (r.get("git_commit") or "").strip()})
    versions_source = ""
    if "versions" in prov:
        versions = dict(prov["versions"])
    else:  # results.csv does not record versions: those of the environment writing the report
        from ptcore.runinfo import versions as _versions

        versions, versions_source = _versions(), " (report environment)"

    budget = data.config.get("budget") if isinstance(data.config.get("budget"), dict) else {}
    return Report(
        name=data.name, tasks=tasks, task_labels=task_labels, task_split=task_split, task_metric=task_metric,
        groups=list(groups.values()), methods=methods, rows=table, seeds=seeds, budget=budget,
        search=_search_summary(rows, groups, budget, tasks, methods), tested=tested, commits=commits,
        versions=versions, notes=notes, versions_source=versions_source,
    )


# ------------------------------------------------------------------ rendering (shared)


@dataclass
class Fmt:
    """The few things markdown and LaTeX write differently."""

    pm: str
    bold: Any
    dagger: str
    esc: Any
    delta: Any


MD = Fmt(pm=" ± ", bold=lambda s: f"**{s}**", dagger=DAGGER, esc=lambda s: s.replace("|", "\\|"),
         delta=lambda d: f"{d:+.1f}")


def tex_escape(s: str) -> str:
    repl = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "†": r"$^\dagger$",
        "Δ": r"$\Delta$", "×": r"$\times$", "—": "---", "ρ": r"$\rho$", "<": r"\textless{}", ">": r"\textgreater{}",
    }
    return "".join(repl.get(ch, ch) for ch in s)


TEX = Fmt(pm=r"$\pm$", bold=lambda s: f"\\textbf{{{s}}}", dagger=r"$^\dagger$", esc=tex_escape,
          delta=lambda d: f"${d:+.1f}$")


def _cell_text(c: Cell, best: bool, f: Fmt, n_seeds: int, mean: Optional[float] = None) -> str:
    mean = c.mean if mean is None else mean
    if mean is None:
        return MISSING if f is MD else "--"
    s = f"{mean:.1f}"
    if c.std is not None and n_seeds > 1:
        s += f"{f.pm}{c.std:.1f}"
    if best:
        s = f.bold(s)
    if c.p is not None and c.p < ALPHA:
        s += f.dagger
    if n_seeds > 1 and 0 < c.n < n_seeds:
        s += f" (n={c.n})"
    return s


def _best(values: list[Optional[float]]) -> list[bool]:
    shown = [None if v is None else round(v, 1) for v in values]
    top = max((v for v in shown if v is not None), default=None)
    return [v is not None and v == top for v in shown]


def main_table(rep: Report, f: Fmt) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, body rows and the indices of the first row of each backbone group."""
    header = ["Backbone", "Method"] + [rep.task_labels[t] for t in rep.tasks] + [
        "Avg", "Δ FT", "% params", "Ckpt/task", "Train (s)"]
    body, starts = [], []
    miss = MISSING if f is MD else "--"
    for g in rep.groups:
        rows = [r for r in rep.rows if r.group is g]
        best = {t: _best([r.cells[t].mean for r in rows]) for t in rep.tasks}
        best_avg = _best([r.avg_mean for r in rows])
        starts.append(len(body))
        for i, r in enumerate(rows):
            line = [f.esc(g.label) if i == 0 else "", f.esc(method_label(r.method))]
            line += [_cell_text(r.cells[t], best[t][i], f, len(rep.seeds)) for t in rep.tasks]
            if r.avg_mean is None:
                line.append(miss)
            else:
                avg = Cell(seeds=r.avg.seeds, p=r.avg.p)
                line.append(_cell_text(avg, best_avg[i], f, len(rep.seeds), mean=r.avg_mean).replace(
                    f" (n={avg.n})", ""))
            if r.method == BASELINE:
                line.append("(ref.)")
            else:
                line.append(miss if r.delta is None else f.delta(r.delta))
            line.append(miss if r.pct is None else fmt_pct(r.pct))
            line.append(miss if r.ckpt is None else human_bytes(r.ckpt))
            line.append(miss if r.train_s is None else fmt_seconds(r.train_s))
            body.append(line)
    return header, body, starts


def search_table(rep: Report, f: Fmt) -> tuple[list[str], list[list[str]]]:
    header = ["Backbone", "Task", "Method", "Trials", "Stopped early", "Failed", "Best trial", "Best hyperparameters"]
    body = []
    for c in rep.search:
        body.append([
            f.esc(c.group.label), f.esc(rep.task_labels.get(c.task, c.task)), f.esc(method_label(c.method)),
            str(c.trials), str(c.stopped), str(c.failed),
            MISSING if c.best_trial is None else f.esc(c.best_trial),
            f.esc(c.best_params) if f is MD else (tex_escape(c.best_params) if c.best_params != MISSING else "--"),
        ])
    return header, body


def _join(items: Sequence[str]) -> str:
    return ", ".join(items)


def protocol_text(rep: Report) -> str:
    on_test = [rep.task_labels[t] for t in rep.tasks if rep.task_split[t] == "test"]
    metrics = _join(
        f"{rep.task_labels[t]} {metric_label(rep.task_metric[t])} ({'official test' if rep.task_split[t] == 'test' else 'official validation'})"
        for t in rep.tasks)
    seeds = _join(map(str, rep.seeds)) if rep.seeds else "none"
    budget = _join(f"{k}={_fmt_value(v)}" for k, v in rep.budget.items()) if rep.budget else "not recorded"
    split = "the official validation split" + (f" (the official test split for {_join(on_test)})" if on_test else "")
    if rep.search:
        search = f"Search budget: {budget}. Final runs: the best search configuration of each cell"
    else:
        search = "No search trials recorded (fixed configurations). Final runs: each cell's configuration"
    return (
        f"Protocol: epochs and hyperparameters are selected on a dev split carved from the official training data "
        f"(never reported); scores are on {split}. {search}, trained with seed{'s' if len(rep.seeds) != 1 else ''} "
        f"{seeds}. Metrics (×100): {metrics}."
    )


def caption_text(rep: Report) -> str:
    n = len(rep.seeds)
    spread = (f"mean ± sample standard deviation over {n} seeds" if n > 1 else "a single seed (no spread shown)")
    s = (f"Primary metric ×100, {spread}. Best per column within each backbone in bold. "
         f"Avg: mean over tasks (its ± over per-seed task averages). Δ FT: Avg minus fine-tuning's Avg on the same "
         f"backbone. % params: trainable parameters as a share of the model. Ckpt/task: bytes stored per task "
         f"(trainable weights). Train (s): mean training wall-clock seconds per run (one task, one seed). ")
    if BASELINE not in rep.methods:
        s += "No fine-tuning baseline in this study: no Δ and no significance test."
    elif rep.tested:
        s += (f"{DAGGER}: p < {ALPHA:g} vs. fine-tuning on the same backbone, two-sided paired t-test over seeds "
              f"(scipy.stats.ttest_rel, runs paired by seed; Avg on per-seed averages); cells with fewer than 2 "
              f"paired seeds are not tested.")
    else:
        s += "No significance test: fewer than 2 paired seeds per cell."
    s += f" {MISSING}: no successful final run."
    return s


def provenance_text(rep: Report) -> str:
    if not rep.commits:
        commit = "git commit not recorded"
    elif len(rep.commits) == 1:
        commit = f"git commit {rep.commits[0][:12]}"
    else:
        commit = f"git commits {_join(c[:12] for c in rep.commits)} (results from {len(rep.commits)} commits)"
    vers = _join(f"{k} {v}" for k, v in rep.versions.items()) if rep.versions else "not recorded"
    return f"Code: {commit}. Package versions{rep.versions_source}: {vers}. Generated by `orchestrate report`."


FIGURE_CAPTION = ("Primary metric ×100 vs backbone parameters (log scale), per task and averaged; one line per "
                  "method; error bars: standard deviation over seeds.")
SEARCH_CAPTION = ("Search trials per cell. Stopped early: stopped by the scheduler, or ended before the maximum "
                  "number of epochs (early stopping). Best hyperparameters: the best trial's values (selected on dev) "
                  "of the settings that differ across the cell's trials.")


# ------------------------------------------------------------------ markdown


def render_markdown(rep: Report) -> str:
    from tabulate import tabulate

    header, body, _ = main_table(rep, MD)
    align = ["left", "left"] + ["right"] * (len(header) - 2)
    out = [f"# Results: {rep.name}", "", protocol_text(rep), "", "## Main results", ""]
    out.append(f"**Table 1.** {caption_text(rep)}")
    out.append("")
    out.append(tabulate(body, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True))
    if rep.notes:
        out += ["", "Missing or incomplete cells:", ""] + [f"- {n}" for n in rep.notes]
    out += ["", "## Scale", "",
            "![Primary metric vs backbone parameters](scale.png)", "",
            f"**Figure 1.** {FIGURE_CAPTION}", ""]
    out += ["## Hyperparameter search", ""]
    if rep.search:
        sh, sb = search_table(rep, MD)
        out.append(f"**Table 2.** {SEARCH_CAPTION}")
        out.append("")
        out.append(tabulate(sb, headers=sh, tablefmt="pipe", colalign=["left"] * 3 + ["right"] * 4 + ["left"],
                            disable_numparse=True))
    else:
        out.append("No search trials recorded.")
    out += ["", "---", "", provenance_text(rep), ""]
    return "\n".join(out)


# ------------------------------------------------------------------ LaTeX


SHRINK_BEGIN = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"  # shrink to fit, never enlarge


def render_latex(rep: Report, figure: Optional[str] = "scale.pdf") -> str:
    header, body, starts = main_table(rep, TEX)
    ncol = len(header) - 1  # the backbone is a group heading spanning the table, not a column
    lines = [
        r"\documentclass{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage[margin=2cm" + (",landscape" if len(rep.tasks) >= 6 else "") + "]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\setlength{\tabcolsep}{4pt}",
        r"\begin{document}",
        r"\sloppy",
        "",
        rf"\section*{{Results: {tex_escape(rep.name)}}}",
        "",
        tex_escape(protocol_text(rep)),
        "",
        r"\begin{table}[ht]",
        r"\centering",
        r"\small",
        rf"\caption{{{tex_escape(caption_text(rep))}}}",
        SHRINK_BEGIN,
        r"\begin{tabular}{l" + "r" * (ncol - 1) + "}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in header[1:]) + r" \\",
    ]
    for gi, start in enumerate(starts):
        end = starts[gi + 1] if gi + 1 < len(starts) else len(body)
        lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{body[start][0]}}}}} \\")
        for line in body[start:end]:
            lines.append(" & ".join(line[1:]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    if rep.notes:
        lines.append(r"\noindent Missing or incomplete cells:")
        lines.append(r"\begin{itemize}")
        lines += [rf"\item {tex_escape(n)}" for n in rep.notes]
        lines += [r"\end{itemize}", ""]
    if figure:
        lines += [
            rf"\IfFileExists{{{figure}}}{{",
            r"\begin{figure}[ht]",
            r"\centering",
            rf"\includegraphics[width=\linewidth]{{{figure}}}",
            rf"\caption{{{tex_escape(FIGURE_CAPTION)}}}",
            r"\end{figure}",
            r"}{}",
            "",
        ]
    if rep.search:
        sh, sb = search_table(rep, TEX)
        lines += [
            r"\begin{table}[ht]",
            r"\centering",
            r"\small",
            rf"\caption{{{tex_escape(SEARCH_CAPTION)}}}",
            SHRINK_BEGIN,
            r"\begin{tabular}{llrrrrp{0.3\linewidth}}",
            r"\toprule",
            " & ".join(tex_escape(h) for h in sh[1:]) + r" \\",
        ]
        group = None
        for line in sb:  # the backbone is a group heading here too
            if line[0] != group:
                group = line[0]
                lines += [r"\midrule", rf"\multicolumn{{{len(sh) - 1}}}{{l}}{{\textit{{{group}}}}} \\"]
            lines.append(" & ".join(line[1:]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    lines += [r"\noindent\footnotesize " + tex_escape(provenance_text(rep).replace("`", "")), "", r"\end{document}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ writing


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # atomic: a reader never sees half a report
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(
    study: str | os.PathLike,
    out_dir: Optional[str | os.PathLike] = None,
    provenance: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write results.md, results.tex, scale.png and scale.pdf; return the report directory.

    ``study``: a study file (its ``output_dir``, default ``studies_out/<name>``) or a study
    output directory holding ``results.csv``. ``out_dir`` defaults to ``reports/<name>``
    (relative to the current directory). ``provenance``: ``{"versions": {pkg: version},
    "git_commit": sha}`` overrides the footer (default: the rows' ``git_commit`` and
    :func:`ptcore.runinfo.versions`).
    """
    from .report_plot import plot_scale

    data = load_study(study)
    rep = build_report(data, provenance)
    out = Path(out_dir) if out_dir is not None else Path("reports") / data.name
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "results.md", render_markdown(rep).encode())
    _atomic_write(out / "results.tex", render_latex(rep).encode())
    for ext, blob in plot_scale(rep).items():
        _atomic_write(out / f"scale.{ext}", blob)
    return out


# ------------------------------------------------------------------ CLI


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study file (yaml) or study output directory (with results.csv)")
    p.add_argument("--out", default=None, help="report directory (default: reports/<study name>)")


def handle_report(args: argparse.Namespace) -> int:
    out = write_report(args.study, args.out)
    for name in ("results.md", "results.tex", "scale.png", "scale.pdf"):
        print(out / name)
    return 0


def register_cli() -> None:
    """Register ``orchestrate report`` (idempotent)."""
    from orchestrator.cli import command

    command("report", "markdown/LaTeX result tables vs fine-tuning and a scale-curve plot of a study")(
        (add_report_args, handle_report))
