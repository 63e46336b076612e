"""The study's declared contrasts, tested in every regime, and the findings written from them.

A study names the method pairs its report tests (``report.contrasts``; by default the seed
papers' claims wherever the study runs both methods: P-Tuning v2 vs fine-tuning, P-Tuning v2
vs prompt tuning, dynamic prompting vs prompt tuning, LoRA vs fine-tuning). Each pair is
tested on every task, backbone and regime where both methods have final runs, by the same
test over seeds (:func:`orchestrator.report.stats.contrast`), for a difference and for
equivalence within the study's margin; the whole report is one family for each, corrected
by Holm (:func:`orchestrator.report.stats.verdicts`). The findings are sentences built from
these numbers alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from orchestrator.report import stats
from orchestrator.common.labels import fmt_p
from orchestrator.report.regimes import run_score
from orchestrator.ledger.results import OK
from orchestrator.study import ReportSettings


@dataclass
class ContrastRow:
    regime: str
    backbone: str  # the group's label
    group_key: tuple
    task: str
    a: str  # method labels (the ledger's method_label or method)
    b: str
    n_a: int
    n_b: int
    mean_a: Optional[float]
    mean_b: Optional[float]
    test: Optional[stats.Contrast]
    why: str = ""  # why not tested
    verdict: Optional[str] = None
    p_holm: Optional[float] = None
    tost_holm: Optional[float] = None

    @property
    def delta(self) -> Optional[float]:
        return None if self.mean_a is None or self.mean_b is None else self.mean_a - self.mean_b


@dataclass
class ContrastSettings:
    pairs: list[tuple[str, str]]
    margin: float
    alpha: float
    resamples: int
    declared: bool  # the study file names its contrasts (else: the defaults that apply)


def settings_of(config: dict, methods: list[str]) -> ContrastSettings:
    """The study file's ``report:`` section (defaults where it has none or is older)."""
    raw = config.get("report") if isinstance(config.get("report"), dict) else {}
    try:
        rs = ReportSettings.model_validate(raw)
    except ValueError:
        rs = ReportSettings()
    return ContrastSettings(pairs=rs.pairs(methods), margin=rs.equivalence_margin, alpha=rs.alpha,
                            resamples=rs.bootstrap_resamples, declared=rs.contrasts is not None)


def _data_seed(r: dict) -> Optional[int]:
    cfg = r.get("config") or {}
    v = cfg.get("data_seed")
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def seed_runs(finals: list[dict], task_split: dict[str, str]) -> dict[tuple, list[dict]]:
    """(regime, group key, task, method) -> one run per seed: ``{"seed", "score", "data_seed"}``
    (the first ok final run of each seed, as the main table counts them; multi-task runs per task)."""
    out: dict[tuple, list[dict]] = {}
    seen: set = set()
    for r in sorted(finals, key=lambda r: (r.get("seed") is None, r.get("seed") or 0)):
        if r["status"] != OK or r.get("seed") is None:
            continue
        for t in r.get("task", "").split("+"):
            v = run_score(r, t, task_split.get(t, "val"))
            key = (r["regime"], (r.get("backbone") or "?", r.get("layers")), t, r.get("method", ""))
            if v is None or (key, r["seed"]) in seen:
                continue
            seen.add((key, r["seed"]))
            out.setdefault(key, []).append({"seed": r["seed"], "score": 100.0 * v, "data_seed": _data_seed(r)})
    return out


def test_contrasts(finals: list[dict], task_split: dict[str, str], settings: ContrastSettings,
                   regime_order: list[str], group_label: Callable[[tuple], str], task_order: list[str]) -> list[ContrastRow]:
    """Every declared pair on every (regime, backbone, task) where both methods ran, tested and
    given its verdict (Holm over all of them)."""
    runs = seed_runs(finals, task_split)
    cells = sorted({(k[0], k[1], k[2]) for k in runs},
                   key=lambda c: (regime_order.index(c[0]) if c[0] in regime_order else len(regime_order), c[0],
                                  str(c[1][0]), c[1][1] or 0,
                                  task_order.index(c[2]) if c[2] in task_order else len(task_order), c[2]))
    rows: list[ContrastRow] = []
    for regime, gk, task in cells:
        for a, b in settings.pairs:
            ra, rb = runs.get((regime, gk, task, a)), runs.get((regime, gk, task, b))
            if not ra or not rb:
                continue
            test, why = stats.contrast(ra, rb)
            rows.append(ContrastRow(
                regime=regime, backbone=group_label(gk), group_key=gk, task=task, a=a, b=b, n_a=len(ra), n_b=len(rb),
                mean_a=stats.mean([x["score"] for x in ra]), mean_b=stats.mean([x["score"] for x in rb]),
                test=test, why=why,
            ))
    for row, (verdict, p_holm, tost_holm) in zip(rows, stats.verdicts([r.test for r in rows], settings.margin, settings.alpha)):
        row.verdict, row.p_holm, row.tost_holm = verdict, p_holm, tost_holm
    return rows


# ------------------------------------------------------------------ words


def verdict_text(row: ContrastRow, margin: float) -> str:
    if row.verdict is None:
        return f"not tested ({row.why})"
    if row.verdict == stats.EQUIVALENT:
        return f"equivalent within ±{margin:g}"
    return row.verdict


def finding(row: ContrastRow, settings: ContrastSettings, method_label: Callable[[str], str],
            task_label: Callable[[str], str], several_regimes: bool) -> str:
    """One sentence per contrast, every number from the test."""
    where = f"{task_label(row.task)}, {row.backbone}" + (f", {row.regime}" if several_regimes else "")
    head = f"{method_label(row.a)} vs {method_label(row.b)} ({where})"
    if row.test is None:
        return f"{head}: not tested: {row.why}."
    c = row.test
    lo, hi = c.ci(1 - settings.alpha)
    eq_lo, eq_hi = c.ci(1 - 2 * settings.alpha)
    seeds = f"{c.n_a} pairs" if c.test.startswith("paired") else f"{c.n_a}+{c.n_b} seeds"
    s = (f"{head}: **{verdict_text(row, settings.margin)}**. Δ = {c.delta:+.1f} points "
         f"({row.mean_a:.1f} vs {row.mean_b:.1f}), {100 * (1 - settings.alpha):.0f}% CI [{lo:+.1f}, {hi:+.1f}], "
         f"{c.test} ({seeds}): p = {fmt_p(c.p)}, Holm {fmt_p(row.p_holm)}; "
         f"equivalence ±{settings.margin:g} (TOST, {100 * (1 - 2 * settings.alpha):.0f}% CI [{eq_lo:+.1f}, {eq_hi:+.1f}]): "
         f"p = {fmt_p(c.tost_p(settings.margin))}, Holm {fmt_p(row.tost_holm)}.")
    if row.verdict == stats.EQUIVALENT and row.p_holm is not None and row.p_holm < settings.alpha:
        s += " The difference itself is also significant, and smaller than the margin."
    if row.verdict == stats.INCONCLUSIVE:
        s += f" This design detects |Δ| ≥ {c.detectable(settings.alpha):.1f} with 80% power (before Holm)."
    return s


def summary_counts(rows: list[ContrastRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        key = r.verdict or "not tested"
        out[key] = out.get(key, 0) + 1
    return out


def power_line(rows: list[ContrastRow], settings: ContrastSettings) -> Optional[str]:
    """The smallest differences this study can detect (median and range over its tested contrasts)."""
    import statistics

    ds = [r.test.detectable(settings.alpha) for r in rows if r.test is not None]
    if not ds:
        return None
    return (f"Power: with the seeds and spreads observed, a contrast detects a difference of "
            f"{statistics.median(ds):.1f} points (median over the {len(ds)} tested; range {min(ds):.1f}–{max(ds):.1f}) "
            f"with 80% power at α = {settings.alpha:g} before Holm; smaller true differences usually read inconclusive.")


def as_record(row: ContrastRow, settings: ContrastSettings) -> dict[str, Any]:
    """The contrast as plain data (contrasts.csv)."""
    c = row.test
    rec: dict[str, Any] = {
        "regime": row.regime, "backbone": row.backbone, "task": row.task, "a": row.a, "b": row.b,
        "n_a": row.n_a, "n_b": row.n_b, "mean_a": row.mean_a, "mean_b": row.mean_b, "delta": row.delta,
        "test": c.test if c else "", "verdict": row.verdict or "", "why": row.why, "margin": settings.margin,
    }
    if c is not None:
        lo, hi = c.ci(1 - settings.alpha)
        rec.update(se=c.se, df=c.df, ci_low=lo, ci_high=hi, p=c.p, p_holm=row.p_holm, tost_p=c.tost_p(settings.margin),
                   tost_p_holm=row.tost_holm, detectable=c.detectable(settings.alpha))
    return rec
