"""The report's tables as rows of text, and the words around them (protocol, captions,
notes, provenance): shared by markdown and LaTeX, which differ only in a few symbols
(:class:`Fmt`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ptcore.errors import PtcoreError
from ptcore.methods import get_method

from orchestrator.report import stats
from orchestrator.report.build import Report, Row
from orchestrator.report.contrasts import finding, power_line, summary_counts, verdict_text
from orchestrator.report.plots import ladder
from orchestrator.common.labels import (
    BASELINE, MISSING, NOISE_MARK, PRETRAIN_MARK, fmt_p, fmt_score, fmt_seconds, human_bytes,
    human_count, method_label, metric_label,
)  # fmt: skip

SPLIT_NAMES = {"val": "validation", "test": "test"}
FAILURES_HEADING = "Failed runs (status error in the ledger), with the reason each recorded:"


@dataclass(frozen=True)
class Fmt:
    """The few things markdown and LaTeX write differently."""

    pm: str
    bold: Callable[[str], str]
    esc: Callable[[str], str]
    delta: Callable[[float], str]
    missing: str
    noise: str
    pretrain: str


MD = Fmt(pm=" ± ", bold=lambda s: f"**{s}**", esc=lambda s: s.replace("|", "\\|"), delta=lambda d: f"{d:+.1f}",
         missing=MISSING, noise=NOISE_MARK, pretrain=PRETRAIN_MARK)


def tex_escape(s: str) -> str:
    repl = {
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "–": "--", "†": r"$^\dagger$",
        "Δ": r"$\Delta$", "×": r"$\times$", "—": "---", "ρ": r"$\rho$", "τ": r"$\tau$", "α": r"$\alpha$",
        "<": r"\textless{}", ">": r"\textgreater{}", "°": r"$^{\circ}$", "§": r"\S{}", "≥": r"$\geq$", "≤": r"$\leq$",
        "→": r"$\rightarrow$",
    }
    return "".join(repl.get(ch, ch) for ch in s)


TEX = Fmt(pm=r"$\pm$", bold=lambda s: f"\\textbf{{{s}}}", esc=tex_escape, delta=lambda d: f"${d:+.1f}$",
          missing="--", noise=r"$^{\circ}$", pretrain=r"\textsuperscript{\S}")


def _join(items: Sequence[str]) -> str:
    return ", ".join(items)


def task_header(rep: Report, t: str, f: Fmt) -> str:
    return f.esc(rep.task_labels[t]) + (f.pretrain if t in rep.pretraining else "")


# ------------------------------------------------------------------ main table


def _cell_text(c, best: bool, f: Fmt, n_seeds: int, mean: Optional[float] = None, marks: bool = True) -> str:
    mean = c.mean if mean is None else mean
    if mean is None:
        return f.missing
    s = fmt_score(mean)
    if c.std is not None and n_seeds > 1:
        s += f"{f.pm}{fmt_score(c.std)}"
    if best and not (marks and c.near_majority):  # a score within reach of the majority class is never the best
        s = f.bold(s)
    if marks and c.near_majority:
        s += f.noise
    if marks and c.config:
        s += f" [{f.esc(c.config)}]"
    if marks and c.configs > 1:
        s += f" ({c.configs} configs)"
    if n_seeds > 1 and 0 < c.n < n_seeds:
        s += f" (n={c.n})"
    return s


def _best(values: list[Optional[float]]) -> list[bool]:
    shown = [None if v is None else round(v, 1) for v in values]
    top = max((v for v in shown if v is not None), default=None)
    return [v is not None and v == top for v in shown]


def has_references(rep: Report) -> bool:
    return any(v is not None for v in list(rep.majority.values()) + list(rep.chance.values()))


def main_table(rep: Report, f: Fmt) -> tuple[list[str], list[tuple[str, list[list[str]]]]]:
    """Header and sections ``(heading, rows)``: the reference points, then one per backbone.
    Rows hold every column after the first (the heading is the first column in markdown)."""
    header = ["Backbone", "Method"] + [task_header(rep, t, f) for t in rep.tasks] + [
        f.esc(h) for h in ("Avg", "Δ FT", "Trainable", "Ckpt/task", "Train (s)")]
    sections: list[tuple[str, list[list[str]]]] = []
    extra = 4  # Δ FT, Trainable, Ckpt/task, Train (s)
    if has_references(rep):
        refs = []
        for label, values in (("Majority class", rep.majority), ("Chance (uniform guessing)", rep.chance)):
            line = [label] + [f.missing if values.get(t) is None else fmt_score(values[t]) for t in rep.tasks]
            vals = [values.get(t) for t in rep.tasks]
            line.append(f.missing if any(v is None for v in vals) else fmt_score(stats.mean(vals)))
            refs.append(line + [""] * extra)
        sections.append(("Reference points", refs))
    for g in rep.groups:
        rows: list[Row] = [r for r in rep.rows if r.group is g]
        best = {t: _best([r.cells[t].mean for r in rows]) for t in rep.tasks}
        best_avg = _best([r.avg_mean for r in rows])
        body = []
        for i, r in enumerate(rows):
            line = [f.esc(method_label(r.method))]
            line += [_cell_text(r.cells[t], best[t][i], f, len(rep.seeds)) for t in rep.tasks]
            if r.avg_mean is None:
                line.append(f.missing)
            else:
                line.append(_cell_text(r.avg, best_avg[i], f, len(rep.seeds), mean=r.avg_mean, marks=False).split(" (n=")[0])
            if r.method == BASELINE:
                line.append("(ref.)")
            else:
                line.append(f.missing if r.delta is None else f.delta(r.delta))
            line.append(f.esc(f"{r.trainable_span} (by task)") if r.trainable_span else
                        (f.missing if r.trainable is None else human_count(r.trainable)))
            line.append(f.missing if r.ckpt is None else human_bytes(r.ckpt))
            line.append(f.missing if r.train_s is None else fmt_seconds(r.train_s))
            body.append(line)
        sections.append((f.esc(g.label), body))
    return header, sections


# ------------------------------------------------------------------ data table


def data_table(rep: Report, f: Fmt) -> tuple[list[str], list[list[str]]]:
    splits = ["train", "dev", "val"] + (["test"] if any("test" in d.sizes for d in rep.data) else [])
    header = ["Task"] + [s.capitalize() for s in splits] + ["Max length", "Epochs", "Batch", "Truncated"]
    header = [f.esc(h) for h in header]
    body = []
    for d in rep.data:
        line = [task_header(rep, d.task, f)]
        for s in splits:
            size = d.sizes.get(s)
            if not size:
                line.append(f.missing)
                continue
            how = []
            if d.subsampled.get(s):
                how.append(d.subsampled[s])
            if d.carved.get(s):
                how.append("carved")
            if how:
                size += f" ({'; '.join(how)})"
            line.append(f.esc(size))
        line += [f.esc(d.max_length or f.missing), f.esc(d.epochs or f.missing), f.esc(d.batch_size or f.missing),
                 f.esc(d.truncated or f.missing)]
        body.append(line)
    return header, body


def data_notes(rep: Report) -> list[str]:
    """One line per task: its runs' data notes, verbatim."""
    return [f"{rep.task_labels[d.task]}: {'; '.join(d.notes)}." for d in rep.data if d.notes]


# ------------------------------------------------------------------ search and tests


def search_table(rep: Report, f: Fmt) -> tuple[list[str], list[list[str]]]:
    header = ["Backbone", "Task", "Method", "Trials", "Completed", "Stopped early", "Failed"]
    other = any(c.other for c in rep.search)
    if other:
        header.append("Other status")
    header += ["Selected trial", "Dev", "Selected hyperparameters"]
    header = [f.esc(h) for h in header]
    body = []
    for c in rep.search:
        line = [f.esc(c.group.label), task_header(rep, c.task, f), f.esc(method_label(c.method)),
                str(c.trials), str(c.completed), str(c.pruned), str(c.failed)]
        if other:
            line.append(str(c.other))
        line += [f.missing if c.selected is None else f.esc(c.selected),
                 f.missing if c.selected_dev is None else fmt_score(c.selected_dev),
                 f.esc(c.params) if c.params else f.missing]
        body.append(line)
    return header, body


def contrasts_table(rep: Report, f: Fmt) -> tuple[list[str], list[list[str]]]:
    """Every contrast of the study, in every regime: Δ, its interval, the test, p and Holm, the
    equivalence test and the verdict."""
    cs = rep.settings
    several = len({c.regime for c in rep.contrasts}) > 1
    level = f"{100 * (1 - cs.alpha):.0f}% CI" if cs else "CI"
    header = (["Regime"] if several else []) + ["Backbone", "Task", "Contrast", "Δ", level, "Test", "p", "p (Holm)",
                                                f"TOST ±{cs.margin:g} p (Holm)" if cs else "TOST p (Holm)", "Verdict"]
    body = []
    for c in rep.contrasts:
        line = ([f.esc(c.regime)] if several else []) + [
            f.esc(c.backbone), task_header(rep, c.task, f) if c.task in rep.task_labels else f.esc(c.task),
            f.esc(f"{method_label(c.a)} vs {method_label(c.b)}"),
            f.missing if c.delta is None else f.delta(c.delta),
        ]
        if c.test is None:
            line += [f.missing, f.missing, f.missing, f.missing, f.missing, f.esc(verdict_text(c, cs.margin))]
        else:
            lo, hi = c.test.ci(1 - cs.alpha)
            short = "paired t" if c.test.test.startswith("paired") else "Welch t"
            line += [f.esc(f"[{lo:+.1f}, {hi:+.1f}]"), f.esc(f"{short}, {c.test.n_a}+{c.test.n_b}"),
                     f.esc(fmt_p(c.test.p)), f.esc(fmt_p(c.p_holm)), f.esc(fmt_p(c.tost_holm)),
                     f.esc(verdict_text(c, cs.margin))]
        body.append(line)
    return [f.esc(h) for h in header], body


def findings(rep: Report) -> list[str]:
    """The findings: one sentence per contrast, a count of verdicts and the study's power,
    every number computed from the ledger."""
    cs = rep.settings
    if cs is None or not rep.contrasts:
        return []
    several = len({c.regime for c in rep.contrasts}) > 1
    label = lambda t: rep.task_labels.get(t, t)  # noqa: E731
    counts = summary_counts(rep.contrasts)
    order = [stats.BETTER, stats.WORSE, stats.EQUIVALENT, stats.INCONCLUSIVE, "not tested"]
    tally = ", ".join(f"{counts[k]} {verdict_word(k, cs.margin)}" for k in order if counts.get(k))
    out = [f"{len(rep.contrasts)} contrasts: {tally} (Holm over the {len(rep.tested)} tested, α = {cs.alpha:g}, "
           f"margin ±{cs.margin:g} points)."]
    line = power_line(rep.contrasts, cs)
    if line:
        out.append(line)
    out += [finding(c, cs, method_label, label, several) for c in rep.contrasts]
    return out


def verdict_word(v: str, margin: float) -> str:
    return f"equivalent within ±{margin:g}" if v == stats.EQUIVALENT else v


# ------------------------------------------------------------------ words


def _resample_phrase(rep: Report) -> str:
    bs = sorted(set(rep.resamples.values()), reverse=True)
    if not bs:
        return f"B = {stats.BOOTSTRAP_B} resamples"
    if len(bs) == 1:
        return f"B = {bs[0]} resamples"
    slow = [f"{metric_label(m)}: {b}" for m, b in sorted(rep.resamples.items()) if b != max(bs)]
    return f"B = {max(bs)} resamples (fewer for slow metrics: {_join(slow)})"


def _split_phrase(rep: Report, t: str) -> str:
    split = rep.task_split[t]
    name = SPLIT_NAMES[split]
    d = rep.data_row(t)
    if d is None or not d.sizes.get(split):
        return f"the official {name} split (size not recorded)"
    n = d.sizes[split]
    if d.carved.get(split):
        return f"{n} examples carved from the official validation file (not the full official split)"
    if d.subsampled.get(split):
        sub = d.subsampled[split]
        return f"a {n}-example subset of the official {name} split" + (f" ({sub})" if sub != "subset" else "")
    return f"the whole official {name} split ({n} examples)"


def protocol_text(rep: Report) -> str:
    parts = []
    if rep.data:
        parts.append("Data: Table 1 gives, per task, the examples each run used (train, dev, reported split), "
                     "as the runs recorded them, with max length, epochs and truncation.")
    else:
        parts.append("Data: this ledger records no data budget (no data_json), so split sizes are not shown.")
    carved = any(d.carved.get("dev") for d in rep.data)
    parts.append("Selection: hyperparameters and the best epoch are chosen on the dev split"
                 + (" carved from the official training data" if carved else "") + ", which is never reported.")
    if rep.search:
        n = sum(c.trials for c in rep.search)
        done = sum(c.completed for c in rep.search)
        pruned = sum(c.pruned for c in rep.search)
        failed = sum(c.failed for c in rep.search)
        per_cell = sorted({c.trials for c in rep.search})
        tpc = rep.budget.get("trials_per_cell")
        cells = f"{tpc} trials per cell" if tpc is not None else (
            f"{per_cell[0]} trials per cell" if len(per_cell) == 1 else f"{per_cell[0]}–{per_cell[-1]} trials per cell")
        asha = []
        if rep.budget.get("grace_period") is not None:
            asha.append(f"grace period {rep.budget['grace_period']} epoch{'s' if rep.budget['grace_period'] != 1 else ''}")
        if rep.budget.get("reduction_factor") is not None:
            asha.append(f"reduction factor {rep.budget['reduction_factor']}")
        how = ("successive halving decided from each cell's dev scores alone, the same in every run" if rep.halving
               else "ASHA (Ray's, asynchronous: decisions depend on the order trials report in)")
        parts.append(f"Search: {cells}, {len(rep.search)} cells ({n} trials: {done} completed, {pruned} stopped early "
                     f"by {how}{' (' + _join(asha) + ')' if asha else ''}, {failed} failed); "
                     f"final runs use each cell's selected trial.")
    else:
        parts.append("Search: none recorded (fixed configurations).")
    seeds = _join(map(str, rep.seeds)) if rep.seeds else "none"
    epochs = ("; " + (f"{rep.epochs[0]} epochs" if len(rep.epochs) == 1 else f"{rep.epochs[0]}–{rep.epochs[-1]} epochs")
              if rep.epochs else "")
    parts.append(f"Final runs: seed{'s' if len(rep.seeds) != 1 else ''} {seeds}{epochs}.")
    parts.append("Reported (×100): " + "; ".join(
        f"{rep.task_labels[t]} {metric_label(rep.task_metric[t])} on {_split_phrase(rep, t)}" for t in rep.tasks) + ".")
    base = "fine-tuning on the same backbone" if BASELINE in rep.methods else "none (no fine-tuning in this study)"
    refs = "; majority class and chance per label task" if has_references(rep) else ""
    parts.append(f"Baselines: {base}{refs}.")
    return " ".join(parts)


def main_caption(rep: Report, config_mark: str = "[…]") -> str:
    n = len(rep.seeds)
    spread = (f"mean ± sample standard deviation over {n} seeds" if n > 1 else "a single seed (no spread shown)")
    s = (f"Primary metric ×100 on each task's reported split, {spread}. Best per column within each backbone in bold "
         f"(never a cell marked {NOISE_MARK}). ")
    if has_references(rep):
        exact = [rep.task_labels[t] for t in rep.tasks if rep.chance.get(t) is not None and rep.chance_exact.get(t)]
        estimated = [rep.task_labels[t] for t in rep.tasks if rep.chance.get(t) is not None and not rep.chance_exact.get(t)]
        how = []
        if exact:
            how.append(f"exactly 100/K for accuracy with K labels ({_join(exact)})")
        if estimated:
            how.append(f"for other metrics the mean of {stats.CHANCE_DRAWS} seeded draws, a Monte-Carlo estimate "
                       f"({_join(estimated)})")
        s += ("Majority class: the score of predicting the most frequent training label for every item; chance: the "
              f"expected score of guessing labels uniformly at random, {'; '.join(how)}; {MISSING} where a task has no "
              "label set. ")
    if any(c.interval is not None for r in rep.rows for c in r.cells.values()):
        b = _resample_phrase(rep)
        s += (f"{NOISE_MARK}: the cell's 95% interval reaches down to the majority-class score or below (interval: mean "
              f"± t·SE, SE² = the seeds' variance / k + the variance of the seed-mean over a bootstrap of the evaluation "
              f"items, {b}, whole groups or passages where the task has them). ")
    if any(c.config for r in rep.rows for c in r.cells.values()):
        s += (f"{config_mark}: the structural settings the cell's search selected (depth: prompted layers from the top, all: every "
              "layer); Trainable is then the selected configuration's count, a range marked (by task) where the row's "
              "tasks selected different ones. ")
    if any(c.configs > 1 for r in rep.rows for c in r.cells.values()):
        s += "(k configs): the cell's seeds ran k different configurations (a resumed search), averaged together. "
    s += ("No significance marks here: the study's contrasts are tested over seeds in every regime, in the Contrasts "
          "table and the Findings. ")
    s += ("Avg: mean over tasks (its ± over per-seed task averages). Δ FT: Avg minus fine-tuning's Avg on the same "
          "backbone (descriptive, not tested). Trainable: trainable parameters. Ckpt/task: bytes stored per task "
          f"(trainable weights). Train (s): mean training seconds per run (one task, one seed). {MISSING}: no "
          "successful final run.")
    return s


def data_caption(rep: Report) -> str:
    return ("Data each run used, from the final runs' own records: examples per split (train: training; dev: "
            "selection, every epoch; val/test: reported); (of N): a seeded subset of N examples; (subset): a seeded "
            "subset; (carved): split off the official training data. Max length in tokens; epochs and batch size of "
            "the final runs; truncated: inputs cut at max length, per split. A range a–b where runs differ. Below the "
            "table: each task's data notes, as the runs recorded them.")


def search_caption(rep: Report) -> str:
    return ("Search trials per cell, by their status in the ledger: completed (trained to the end), stopped early "
            "(pruned), failed (error). Selected trial: the trial whose configuration the final runs used; "
            "Dev: its dev score ×100; selected hyperparameters: its searched values (3 significant digits). Each "
            "cell's search drawn (parallel coordinates, parameter importances): its MLflow cell run, artifacts search/ "
            "(studies run since these figures exist).")


def contrasts_caption(rep: Report) -> str:
    cs = rep.settings
    declared = "declared by the study (report.contrasts)" if cs.declared else "the defaults that apply to this study's methods"
    return (f"The study's contrasts, {declared}, a against b on every task, backbone and regime where both ran. Δ: "
            f"mean of a minus mean of b over seeds (×100). Test: Welch's t over seeds (unequal variances, "
            f"Welch–Satterthwaite df), or a paired t over data seeds where each seed of both methods trained on its own "
            f"sample and they share the samples (few-shot); seed counts a+b. The test asks whether one procedure trains "
            f"better models for these evaluation items: the seed-to-seed spread is its noise. p: two-sided; p (Holm): "
            f"Holm-corrected over the {len(rep.tested)} tested contrasts. TOST: two one-sided tests of |Δ| < "
            f"{cs.margin:g} points (study setting report.equivalence_margin), Holm-corrected over the same family. "
            f"Verdict: equivalent within ±{cs.margin:g} where TOST rejects at α = {cs.alpha:g}, else better/worse where "
            f"the difference test rejects, else inconclusive (neither shown: not the same as equal).")


def figure_caption(rep: Report) -> str:
    model = ladder(rep)
    axis = (f"layers kept of {model} (its first k layers, not separately pretrained smaller models)" if model
            else "backbone parameters (log scale)")
    s = (f"Primary metric ×100 vs {axis}, one panel per task with results (and their average "
         "where there are several); one colour and marker per method (the same in every report); error bars: "
         "standard deviation over seeds")
    return s + ("; dashed line: chance; dotted line: majority class." if has_references(rep) else ".")


def method_notes(rep: Report) -> list[tuple[str, list[str]]]:
    """(method label, its registered departures from the paper) for every method shown."""
    out = []
    for m in rep.methods:
        try:
            notes = list(get_method(m).notes)
        except (PtcoreError, KeyError):  # a method this version no longer has
            continue
        if notes:
            out.append((method_label(m), notes))
    return out


def pretraining_notes(rep: Report) -> list[str]:
    out = []
    for t in rep.tasks:
        if t in rep.pretraining:
            saw = _join(f"{b} was trained on {ds}" for b, ds in rep.pretraining[t])
            out.append(f"{PRETRAIN_MARK} {rep.task_labels[t]}: {saw} before this study (model card); its scores on "
                       f"this task may reflect pre-training as much as the method.")
    return out


def provenance_text(rep: Report) -> str:
    if not rep.commits:
        commit = "git commit not recorded"
    elif len(rep.commits) == 1:
        commit = f"git commit {rep.commits[0][:12]}"
    else:
        commit = f"git commits {_join(c[:12] for c in rep.commits)} (results from {len(rep.commits)} commits)"
    vers = _join(f"{k} {v}" for k, v in rep.versions.items()) if rep.versions else "not recorded"
    return f"Code: {commit}. Package versions{rep.versions_source}: {vers}. Generated by `orchestrate report`."
