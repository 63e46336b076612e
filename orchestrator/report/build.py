"""From ledger rows to the report's numbers (no formatting): the main cells (mean ± std over
seeds, each cell's interval and selected configuration), the data budget each task ran with,
the majority-class and chance references, the study's contrasts tested over seeds in every
regime with their verdicts (:mod:`.contrasts`), and the search summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from ptcore import runinfo
from ptcore.backbones import pretraining_overlap
from ptcore.metrics import METRICS

from orchestrator.report import stats
from orchestrator.report.contrasts import ContrastRow, ContrastSettings, settings_of, test_contrasts
from orchestrator.report.regimes import RegimeTable, build_regimes
from orchestrator.common.labels import BASELINE, backbone_short, has_label_set, human_count, method_key, method_label, readable_params, span, task_labels, task_spec
from orchestrator.report.load import StudyResults
from orchestrator.ledger.cells import study_finals
from orchestrator.ledger.results import ERROR, FINAL, OK, PRUNED, SEARCH, best_search_row

SPLITS = ("train", "dev", "val", "test")
# config keys that differ between trials without being hyperparameters
NOT_HYPERPARAMETERS = {"seed", "output", "output_dir", "trial_id", "run_name", "data_dir", "experiment", "storage_path"}


# ------------------------------------------------------------------ the model


@dataclass
class Group:
    backbone: str  # the ledger's backbone (a study label, or a hub id in older ledgers)
    layers: Optional[int]
    params: Optional[int]
    model: str = ""  # the hub id (ledger column `model`), for the pre-training check
    truncated: bool = False  # one rung of a ladder that keeps the first k layers of one pretrained model

    @property
    def label(self) -> str:
        if self.truncated and self.layers is not None:  # not a smaller pretrained model: say what it is
            size = f", {human_count(self.params)} params" if self.params is not None else ""
            return f"{backbone_short(self.model or self.backbone)}, first {self.layers} layers{size}"
        bits = []
        if self.layers is not None:
            bits.append(f"{self.layers} layer" + ("" if self.layers == 1 else "s"))
        if self.params is not None:
            bits.append(human_count(self.params))
        return backbone_short(self.backbone) + (f" ({', '.join(bits)})" if bits else "")


@dataclass
class Cell:
    seeds: dict[int, float] = field(default_factory=dict)  # seed -> metric x100 (from the ledger)
    failed: int = 0
    runs: list[dict] = field(default_factory=list)  # the ok rows behind `seeds`
    boot: Optional[np.ndarray] = None  # mean over seeds on each bootstrap resample of the items
    interval: Optional[tuple[float, float]] = None  # 95%: seeds' and items' variance (stats.cell_interval)
    near_majority: bool = False  # `interval` reaches down to the task's majority-class score or below
    config: str = ""  # the selected configuration's structural settings ("depth=2, prompt length=16")
    configs: int = 1  # distinct configurations among its runs (more than 1: the cell mixes them)
    trainable: Optional[float] = None  # the selected configuration's trainable parameters

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def mean(self) -> Optional[float]:
        return stats.mean([self.seeds[s] for s in sorted(self.seeds)]) if self.seeds else None

    @property
    def std(self) -> Optional[float]:
        return stats.std([self.seeds[s] for s in sorted(self.seeds)])



@dataclass
class Row:
    group: Group
    method: str
    cells: dict[str, Cell]  # task -> cell
    avg: Cell  # per-seed averages over tasks (seeds complete on every task)
    avg_mean: Optional[float]  # mean over tasks of the task means (all tasks present)
    delta: Optional[float] = None
    trainable: Optional[float] = None
    trainable_span: str = ""  # "84.5K–310K" where the row's cells trained different counts
    ckpt: Optional[float] = None
    train_s: Optional[float] = None


@dataclass
class DataRow:
    task: str
    sizes: dict[str, str]  # split -> "700" or "700–720" (runs disagree)
    subsampled: dict[str, str]  # split -> "of 67,349" / "" (from the runs' notes)
    carved: dict[str, bool]  # split -> carved from another split (notes)
    max_length: str
    epochs: str
    batch_size: str
    truncated: str
    notes: list[str]
    runs: int  # final runs that recorded it

    def whole(self, split: str) -> bool:
        """No note says ``split`` is a subset of the official one (subsampled or carved)."""
        return not (self.subsampled.get(split) or self.carved.get(split))


@dataclass
class SearchCell:
    group: Group
    task: str
    method: str
    trials: int
    completed: int
    pruned: int
    failed: int
    other: int  # statuses the ledger does not define
    selected: Optional[str]
    selected_dev: Optional[float]
    params: str  # readable, "" when nothing varied


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
    commits: list[str]
    versions: dict[str, str]
    notes: list[str]  # missing or incomplete cells
    versions_source: str = ""  # "" (recorded/injected) or " (report environment)"
    data: list[DataRow] = field(default_factory=list)
    majority: dict[str, Optional[float]] = field(default_factory=dict)
    chance: dict[str, Optional[float]] = field(default_factory=dict)
    chance_exact: dict[str, bool] = field(default_factory=dict)  # task -> 1/K exactly (accuracy), else a Monte-Carlo mean
    reference_why: dict[str, str] = field(default_factory=dict)  # task -> why no majority/chance
    contrasts: list[ContrastRow] = field(default_factory=list)  # every regime's, one Holm family
    settings: Optional[ContrastSettings] = None
    halving: bool = False  # the search stopped trials by orchestrator.ledger.halving (else Ray's ASHA, or no search)
    resamples: dict[str, int] = field(default_factory=dict)  # metric -> B used for the cells' intervals
    stat_notes: list[str] = field(default_factory=list)  # what the tests could not use, and why
    pretraining: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # task -> [(backbone, dataset)]
    epochs: list[int] = field(default_factory=list)
    has_predictions: bool = False
    failures: list[str] = field(default_factory=list)  # failed runs (status error) and the reason each recorded
    regimes: Optional[RegimeTable] = None  # every regime side by side (None: the study ran one)
    main_regime: Optional[str] = None  # which regime the main tables show, where there are several

    @property
    def single_seed(self) -> bool:
        return len(self.seeds) <= 1

    @property
    def tested(self) -> list[ContrastRow]:
        return [c for c in self.contrasts if c.test is not None]

    def data_row(self, task: str) -> Optional[DataRow]:
        return next((d for d in self.data if d.task == task), None)


# ------------------------------------------------------------------ helpers


def _group_key(r: dict) -> tuple:
    return (r.get("backbone") or "?", r.get("layers"))


def _primary_metric(task: str, rows: list[dict]) -> Optional[str]:
    recorded = sorted({r["primary_metric"] for r in rows if r.get("primary_metric")})
    if len(recorded) == 1:
        return recorded[0]
    spec = task_spec(task)
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


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _natural(s: str) -> tuple:
    """Sort key: numeric ids by value, then other ids as text."""
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _note_splits(notes: list[str]) -> tuple[dict[str, str], dict[str, bool]]:
    """What the runs' data notes say about each split: subsampled (from how many) and carved."""
    import re

    sub: dict[str, str] = {}
    carved: dict[str, bool] = {}
    for note in notes:
        low = note.lower()
        m = re.match(r"(train|dev|val|test) subsampled to [\d,]+(?:.*? of ([\d,]+))?", low)
        if m:
            sub[m.group(1)] = f"of {int(m.group(2).replace(',', '')):,}" if m.group(2) else "subset"
        if re.match(r"dev = |dev carved|dev .*carved", low):
            carved["dev"] = True
        if "carved" in low and "from the official validation file" in low:  # no official train file
            carved.update(train=True, dev=True, val=True)
    return sub, carved


def _data_rows(tasks: list[str], finals: list[dict], rows: list[dict]) -> list[DataRow]:
    out = []
    for t in tasks:
        mine = [r for r in finals if r.get("task") == t and r.get("data")]
        if not mine:
            mine = [r for r in rows if r.get("task") == t and r.get("data")]
        if not mine:
            continue
        datas = [r["data"] for r in mine]
        notes: list[str] = []
        for d in datas:
            for n in d.get("notes") or []:
                if isinstance(n, str) and n not in notes:
                    notes.append(n)
        sub, carved = _note_splits(notes)
        sizes = {s: span((d.get("sizes") or {}).get(s) for d in datas) for s in SPLITS}
        trunc_parts = []
        for s in SPLITS:
            cut = span((d.get("truncated") or {}).get(s) for d in datas)
            if cut and cut != "0":
                trunc_parts.append(f"{s} {cut}")
        has_trunc = any(isinstance(d.get("truncated"), dict) and d["truncated"] for d in datas)
        out.append(DataRow(
            task=t,
            sizes={s: v for s, v in sizes.items() if v},
            subsampled=sub,
            carved=carved,
            max_length=span(d.get("max_length") for d in datas),
            epochs=span(d.get("epochs") for d in datas),
            batch_size=span(d.get("batch_size") for d in datas),
            truncated=", ".join(trunc_parts) if trunc_parts else ("0" if has_trunc else ""),
            notes=notes,
            runs=len(mine),
        ))
    return out


# searched settings that change a cell's structure (and its trainable count), shown beside its score
STRUCTURAL = ("depth", "prompt_length", "r", "pool_size", "num_layers")


def _configuration(cell: Cell) -> None:
    """The cell's selected structural settings (from its runs' searched values), how many
    distinct configurations its runs used, and the trainable count of the selected one."""
    params = [r.get("params") or {} for r in cell.runs]
    keys = [json.dumps(p, sort_keys=True, default=str) for p in params]
    cell.configs = len(set(keys)) if keys else 1
    first = params[0] if params else {}
    shown = {k: first[k] for k in STRUCTURAL if k in first}
    if "depth" in shown and shown["depth"] is None:
        shown["depth"] = "all"
    cell.config = readable_params(shown) if shown else ""
    counts = sorted({r["trainable_params"] for r in cell.runs if r.get("trainable_params") is not None})
    cell.trainable = counts[0] if len(counts) == 1 else None


def _common(values: list[Any]) -> Any:
    """The most common value (by its JSON form; ties: the first seen)."""
    if not values:
        return None
    keys = [json.dumps(v, sort_keys=True, default=str) for v in values]
    best = Counter(keys).most_common(1)[0][0]
    return values[keys.index(best)]


# ------------------------------------------------------------------ statistics on predictions


def _split_inputs(data: StudyResults, row: dict, split: str) -> Optional[dict]:
    pred = data.predictions(row)
    entry = pred.get(split) if pred else None
    if not isinstance(entry, dict) or not isinstance(entry.get("predictions"), list) or not isinstance(entry.get("references"), list):
        return None
    if len(entry["predictions"]) != len(entry["references"]) or not entry["references"]:
        return None
    groups = entry.get("groups")
    if groups is not None and (not isinstance(groups, list) or len(groups) != len(entry["references"]) or all(g is None for g in groups)):
        groups = None
    clusters = entry.get("clusters")
    if clusters is not None and (not isinstance(clusters, list) or len(clusters) != len(entry["references"])
                                 or all(c is None for c in clusters)):
        clusters = None
    return {"predictions": entry["predictions"], "references": entry["references"], "groups": groups, "clusters": clusters}


def _signature(inputs: dict) -> str:
    return json.dumps([inputs["references"], inputs["groups"], inputs.get("clusters")], sort_keys=True, default=str)


def _where(group: Group, method: str, task_label: str) -> str:
    return f"{method_label(method)} on {task_label}, {group.label}"


def _task_statistics(rep: Report, data: StudyResults, t: str, cells: list[tuple[Group, str, Cell]], finals: list[dict]) -> None:
    metric, split, tl = rep.task_metric[t], rep.task_split[t], rep.task_labels[t]
    inputs: dict[int, dict] = {}  # id(row) -> its inputs
    for _, _, c in cells:
        for r in c.runs:
            x = _split_inputs(data, r, split)
            if x is not None:
                inputs[id(r)] = x
    rep.has_predictions = rep.has_predictions or bool(inputs)
    if not inputs or metric is None:
        rep.majority[t] = rep.chance[t] = None
        rep.reference_why[t] = "no predictions recorded" if metric else "primary metric unknown"
        return
    canonical = _common([_signature(x) for x in inputs.values()])
    refs_x = next(x for x in inputs.values() if _signature(x) == canonical)
    refs, groups, clusters = refs_x["references"], refs_x["groups"], refs_x.get("clusters")
    for _, _, c in cells:
        for r in c.runs:
            x = inputs.get(id(r))
            if x is not None and _signature(x) != canonical:
                rep.stat_notes.append(f"{tl}: the predictions file {r['predictions']} has other {split} items "
                                      f"than the rest of the task; left out of the tests")
                del inputs[id(r)]

    # references: majority class of the training labels, uniform random labels
    spec = task_spec(t)
    kind = spec.kind if spec is not None else None
    datas = [r["data"] for r in finals if r.get("task") == t and r.get("data")]
    counts = _common([d.get("train_label_counts") for d in datas if d.get("train_label_counts")])
    labels = _common([d.get("labels") for d in datas if d.get("labels")])
    if (kind is not None and not has_label_set(kind)) or not counts:
        rep.majority[t] = rep.chance[t] = None
        rep.reference_why[t] = ("not a label task" if kind is not None and not has_label_set(kind)
                                else "training label counts not recorded")
    else:
        rep.majority[t] = stats.majority_score(metric, counts, refs, groups)
        if labels and all(isinstance(x, int) and not isinstance(x, bool) for x in refs):
            label_set: list = list(range(len(labels)))
        else:
            label_set = [stats.label_value(k, refs) for k in sorted(counts)]
        rep.chance[t], rep.chance_exact[t] = stats.chance_score(metric, label_set, refs, groups)

    # the items' bootstrap, for every cell whose runs all have predictions (its interval)
    b = stats.resamples_for(metric, rep.settings.resamples if rep.settings else None)
    rep.resamples[metric] = b
    resamples = stats.draw_resamples(len(refs), groups, b, clusters=clusters)
    for g, m, c in cells:
        if not c.runs:
            continue
        missing = [r for r in c.runs if id(r) not in inputs]
        if missing:
            rep.stat_notes.append(f"{_where(g, m, tl)}: no predictions for {len(missing)} of {len(c.runs)} "
                                  f"successful runs; not tested")
            continue
        ordered = sorted(c.runs, key=lambda r: r["seed"])
        for r in ordered:
            x = inputs[id(r)]
            whole = stats.score(metric, x["predictions"], x["references"], x["groups"])
            ledger = c.seeds.get(r["seed"])
            if ledger is not None and abs(whole - ledger) > 1e-4:
                rep.stat_notes.append(f"{_where(g, m, tl)}, seed {r['seed']}: its predictions give "
                                      f"{whole:.2f}, the ledger says {ledger:.2f}")
        c.boot = stats.method_scores(metric, [inputs[id(r)] for r in ordered], resamples)
        c.interval = stats.cell_interval([c.seeds[r["seed"]] for r in ordered], c.boot)
        maj = rep.majority.get(t)
        c.near_majority = maj is not None and c.interval is not None and c.interval[0] <= maj


def _statistics(rep: Report, data: StudyResults, by_group: dict[tuple, dict[str, Row]], finals: list[dict]) -> None:
    """Majority/chance per task and each cell's interval (seeds' and items' variance); the
    contrasts are tested in :func:`build_report` over every regime."""
    for t in rep.tasks:
        cells = [(row.group, row.method, row.cells[t]) for rs in by_group.values() for row in rs.values()]
        metric = rep.task_metric[t]
        if metric is not None and metric not in METRICS:
            rep.majority[t] = rep.chance[t] = None
            rep.reference_why[t] = f"metric {metric!r} is not registered in ptcore.metrics"
            continue
        try:
            _task_statistics(rep, data, t, cells, finals)
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as e:  # malformed predictions
            for _, _, c in cells:
                c.boot, c.interval, c.near_majority = None, None, False
            rep.majority[t] = rep.chance[t] = None
            rep.reference_why[t] = "predictions could not be scored"
            rep.stat_notes.append(f"{rep.task_labels[t]}: the stored predictions could not be scored "
                                  f"({type(e).__name__}: {e}); no majority, chance or tests for this task")



# ------------------------------------------------------------------ search


def _search_summary(rows: list[dict], finals: list[dict], groups: dict[tuple, Group], task_order, method_order) -> list[SearchCell]:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["phase"] == SEARCH:
            cells.setdefault((_group_key(r), r.get("task", ""), r.get("method", "")), []).append(r)
    out = []
    for (gk, task, method), trials in cells.items():
        trials = sorted(trials, key=lambda r: _natural(r["trial_id"]))
        sources = sorted({r["source_trial"] for r in finals
                          if _group_key(r) == gk and r.get("task") == task and r.get("method") == method and r.get("source_trial")})
        best = None
        if len(sources) == 1:  # the trial the final runs actually used
            best = next((r for r in trials if r["trial_id"] == sources[0]), None)
        if best is None:
            best = best_search_row(trials)
        params = ""
        if best is not None and best.get("params"):
            params = readable_params(best["params"])
        elif best is not None:  # older ledgers: the config settings that differ across the cell's trials
            configs = [_flatten(r["config"]) if r.get("config") else {} for r in trials]
            keys = sorted({k for c in configs for k in c} - NOT_HYPERPARAMETERS)
            varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
            bc = configs[trials.index(best)]
            params = readable_params({k: bc.get(k) for k in varying})
        out.append(SearchCell(
            group=groups[gk], task=task, method=method, trials=len(trials),
            completed=sum(r["status"] == OK for r in trials), pruned=sum(r["status"] == PRUNED for r in trials),
            failed=sum(r["status"] == ERROR for r in trials),
            other=sum(r["status"] not in (OK, PRUNED, ERROR) for r in trials),
            selected=(best["trial_id"] or None) if best else None,
            selected_dev=None if best is None or best.get("dev_primary") is None else 100.0 * best["dev_primary"],
            params=params,
        ))
    gorder = list(groups)
    out.sort(key=lambda c: (gorder.index(_group_key({"backbone": c.group.backbone, "layers": c.group.layers})),
                            task_order.index(c.task) if c.task in task_order else len(task_order), c.task,
                            method_key(c.method)))
    return out


# ------------------------------------------------------------------ failed runs

NO_REASON = "no reason recorded"


def _fill_layers(rows: list[dict]) -> list[dict]:
    """Rows without ``layers`` (a run that failed before its model was built records only the
    study's ``layers``, none for a whole backbone) take the count the backbone's other rows
    recorded, where they agree on one: a failed trial then counts in its backbone's group
    instead of making a group of its own."""
    known: dict[str, set] = {}
    for r in rows:
        if r.get("layers") is not None:
            known.setdefault(r.get("backbone") or "?", set()).add(r["layers"])
    for r in rows:
        counts = known.get(r.get("backbone") or "?", set())
        if r.get("layers") is None and len(counts) == 1:
            r["layers"] = next(iter(counts))
    return rows


def _reason(r: dict) -> str:
    return " ".join(str(r.get("error") or "").split()) or NO_REASON


def _ids(phase: str, rows: list[dict]) -> str:
    if phase == FINAL:
        seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
        return f"final seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}" if seeds else "final run"
    ids = sorted({r["trial_id"] for r in rows if r.get("trial_id")}, key=_natural)
    return f"{phase} trial{'s' if len(ids) != 1 else ''} {', '.join(ids)}" if ids else f"{phase} run"


def _failures(rows: list[dict], groups: dict[tuple, Group], labels: dict[str, str], task_order: list[str]) -> list[str]:
    """One line per cell, phase and reason: which runs failed (status error) and why, as the ledger recorded it."""
    failed: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == ERROR:
            failed.setdefault((_group_key(r), r.get("task", ""), r.get("method", ""), r["phase"], _reason(r)), []).append(r)
    gorder = list(groups)

    def order(key: tuple) -> tuple:
        gk, task, method, phase, reason = key
        return (gorder.index(gk), task_order.index(task) if task in task_order else len(task_order), task,
                method_key(method), phase != SEARCH, phase, reason)

    out = []
    for key in sorted(failed, key=order):
        gk, task, method, phase, reason = key
        out.append(f"{_where(groups[gk], method, labels.get(task, task))}: {_ids(phase, failed[key])} failed: {reason}")
    return out


def _unrun_note(searched: list[dict]) -> str:
    """Why a cell has no final run at all: its search left nothing to select (every trial
    failed: the reasons), or it was not run."""
    usable = [r for r in searched if r["status"] != ERROR and r.get("dev_primary") is not None]
    if not searched or usable:
        return " (not run)"
    reasons = sorted({_reason(r) for r in searched})
    n = len(searched)
    every = "the search trial" if n == 1 else f"all {n} search trials"
    return f" (not run: {every} failed: {'; '.join(reasons)})"


# ------------------------------------------------------------------ the report


def build_report(data: StudyResults, provenance: Optional[Mapping] = None) -> Report:
    # a method listed twice in a study (e.g. dynamic prompting variants) is told apart by its label
    every = _fill_layers([{**r, "method": r.get("method_label") or r.get("method", "")} for r in data.rows])
    # the main tables, statistics and figure: one single-task regime (full where the study ran it);
    # the regimes table (build_regimes) sets every regime side by side
    single = [r for r in every if "+" not in r.get("task", "")]
    main_regime = "full" if any(r["regime"] == "full" for r in single) else (single[0]["regime"] if single else "full")
    rows = [r for r in single if r["regime"] == main_regime]
    finals = study_finals(rows)  # the final runs that count for each cell (orchestrator.ledger.cells)
    tasks = sorted({r.get("task", "") for r in rows if r.get("task")})
    methods = sorted({r.get("method", "") for r in rows if r.get("method")}, key=method_key)

    # backbone groups, smallest first; size = the smallest total_params seen (bare backbone + head)
    gparams: dict[tuple, list[int]] = {}
    gmodel: dict[tuple, str] = {}
    for r in rows:
        gparams.setdefault(_group_key(r), [])
        gmodel.setdefault(_group_key(r), r.get("model") or r.get("backbone") or "")
        if r.get("total_params") is not None:
            gparams[_group_key(r)].append(r["total_params"])
    groups = {
        k: Group(backbone=k[0], layers=k[1], params=min(v) if v else None, model=gmodel[k])
        for k, v in sorted(gparams.items(), key=lambda kv: (min(kv[1]) if kv[1] else math.inf, kv[0][0], kv[0][1] or 0))
    }
    depths: dict[str, set] = {}
    for g in groups.values():
        depths.setdefault(g.model, set()).add(g.layers)
    for g in groups.values():  # a model kept at several depths: its groups are truncations of one model
        g.truncated = len(depths[g.model]) > 1 and g.layers is not None

    # reported split per task: the official test split where the task has one (NER), else val
    task_split = {}
    for t in tasks:
        has_test = any(r.get("test_primary") is not None for r in finals if r.get("task") == t)
        has_val = any(r.get("val_primary") is not None for r in finals if r.get("task") == t)
        task_split[t] = "test" if has_test or not has_val else "val"
    task_metric = {t: _primary_metric(t, [r for r in rows if r.get("task") == t]) for t in tasks}
    labels = task_labels(tasks)

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
            if not any(_group_key(r) == gk and r.get("method") == m for r in rows):
                continue  # not planned on this backbone (a method's `backbones:`): no row, no "missing" note
            mine = [r for r in finals if _group_key(r) == gk and r.get("method") == m]
            cells = {}
            for t in tasks:
                cell = Cell()
                for r in sorted((r for r in mine if r.get("task") == t), key=lambda r: (r.get("seed") is None, r.get("seed") or 0)):
                    v = r.get(f"{task_split[t]}_primary")
                    if r["status"] == OK and v is not None and r.get("seed") is not None and r["seed"] not in cell.seeds:
                        cell.seeds[r["seed"]] = 100.0 * v
                        cell.runs.append(r)
                    else:
                        cell.failed += 1
                _configuration(cell)
                cells[t] = cell
            complete = sorted(set.intersection(*(set(c.seeds) for c in cells.values()))) if cells else []
            avg = Cell(seeds={s: stats.mean([cells[t].seeds[s] for t in tasks]) for s in complete})
            means = [cells[t].mean for t in tasks]
            avg_mean = stats.mean(means) if means and all(x is not None for x in means) else None
            ok = [r for r in mine if r["status"] == OK]

            def avg_of(col: str, rs: Iterable[dict] = ok) -> Optional[float]:
                xs = [r[col] for r in rs if r.get(col) is not None]
                return stats.mean(xs) if xs else None

            train = avg_of("train_s")
            counts = sorted({c.trainable for c in cells.values() if c.trainable is not None})
            row = Row(
                group=group, method=m, cells=cells, avg=avg, avg_mean=avg_mean,
                trainable=counts[0] if len(counts) == 1 else avg_of("trainable_params"),
                trainable_span="" if len(counts) < 2 or human_count(counts[0]) == human_count(counts[-1])
                else f"{human_count(counts[0])}–{human_count(counts[-1])}",
                ckpt=avg_of("checkpoint_bytes"), train_s=train if train is not None else avg_of("wall_s"),
            )
            table.append(row)
            by_group.setdefault(gk, {})[m] = row
            for t in tasks:
                c = cells[t]
                where = _where(group, m, labels[t])
                if c.n == 0:
                    runs = sum(1 for r in mine if r.get("task") == t)
                    searched = [r for r in rows if r["phase"] == SEARCH and _group_key(r) == gk and r.get("method") == m
                                and r.get("task") == t]
                    notes.append(f"{where}: no successful final run" + (f" ({c.failed} failed)" if runs else _unrun_note(searched)))
                elif len(seeds) > 1 and c.n < len(seeds):
                    missing = sorted(set(seeds) - set(c.seeds))
                    notes.append(f"{where}: {c.n} of {len(seeds)} seeds (missing seed{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(map(str, missing))})")

    for gk, rs in by_group.items():  # delta of the average vs fine-tuning
        ft = rs.get(BASELINE)
        for m, row in rs.items():
            if ft is not None and m != BASELINE and row.avg_mean is not None and ft.avg_mean is not None:
                row.delta = row.avg_mean - ft.avg_mean

    prov = dict(provenance or {})
    commit = prov.get("git_commit")
    if commit:
        commits = [commit] if isinstance(commit, str) else sorted(commit)
    else:
        commits = sorted({r["git_commit"] for r in rows if r.get("git_commit")})
    versions_source = ""
    if "versions" in prov:
        versions = dict(prov["versions"])
    else:  # results.csv does not record versions: those of the environment writing the report
        versions, versions_source = runinfo.versions(), " (report environment)"

    pretraining: dict[str, list[tuple[str, str]]] = {}
    for t in tasks:
        seen = set()
        for gk, g in groups.items():
            if not any(_group_key(r) == gk and r.get("task") == t for r in rows):
                continue
            ds = pretraining_overlap(g.model, t)
            if ds:
                seen.add((backbone_short(g.model), ds))
        if seen:
            pretraining[t] = sorted(seen)

    epochs = sorted({int(r["data"]["epochs"]) for r in finals if r.get("data") and isinstance(r["data"].get("epochs"), (int, float))})
    if not epochs:
        epochs = sorted({int(r["config"]["epochs"]) for r in finals
                         if r.get("config") and isinstance(r["config"].get("epochs"), (int, float))})

    budget = data.config.get("budget") if isinstance(data.config.get("budget"), dict) else {}
    rep = Report(
        name=data.name, tasks=tasks, task_labels=labels, task_split=task_split, task_metric=task_metric,
        groups=list(groups.values()), methods=methods, rows=table, seeds=seeds, budget=budget,
        search=_search_summary(rows, finals, groups, tasks, methods), commits=commits,
        versions=versions, notes=notes, versions_source=versions_source,
        data=_data_rows(tasks, finals, rows), pretraining=pretraining, epochs=epochs,
        failures=_failures(rows, groups, labels, tasks),
    )
    rep.regimes = build_regimes(every, data.config, task_split, method_key)
    if rep.regimes is not None:
        rep.main_regime = main_regime
        for t in rep.regimes.tasks:  # tasks only a multi-task regime ran: the reported split of their rows
            rep.regimes.split.setdefault(t, "val")
    rep.settings = settings_of(data.config, sorted({r.get("method", "") for r in every if r.get("method")}))
    rep.halving = budget.get("scheduler", "halving") == "halving" and any(
        r.get("dev_curve") for r in rows if r["phase"] == SEARCH)  # ledgers before dev_curve ran ASHA
    _statistics(rep, data, by_group, finals)

    # the study's contrasts, in every regime, by one test; one Holm family for the report
    splits = {**(rep.regimes.split if rep.regimes is not None else {}), **task_split}
    order = rep.regimes.regimes if rep.regimes is not None else [main_regime]

    def group_label(gk: tuple) -> str:
        return groups[gk].label if gk in groups else Group(backbone=gk[0], layers=gk[1], params=None).label

    task_order = tasks + [t for t in (rep.regimes.tasks if rep.regimes is not None else []) if t not in tasks]
    rep.contrasts = test_contrasts(study_finals(every), splits, rep.settings, order, group_label,
                                   task_order)
    return rep
