"""The report's statistics: the contrasts' tests over seeds (difference and equivalence),
Holm's correction, each cell's interval, and the majority-class and chance references.

**Why a test over seeds.** A trained model is one draw of a training procedure: the seed
(initialisation, data order and, in the few-shot regime, the training sample) moves a
score by 0.5 to 8 points in this project's studies. A test that resamples only the
evaluation items treats each trained model as fixed, so two identical procedures with a
seed spread of 1.9 points differ "significantly" about 22% of the time at α = 0.05.
:func:`contrast` compares the per-seed scores of two methods on the same evaluation items:

* **Welch's t-test over seeds** (unequal variances, Welch–Satterthwaite degrees of freedom);
* **a paired t-test over data seeds** where each seed of both methods trained on its own
  data sample and both methods share the samples (the few-shot regime): the sample's own
  effect cancels in the pairs.

Both are conditional on the evaluation set: they ask whether one procedure trains better
models *for these items*, the question a benchmark table answers; they do not generalise
over new items (the cells' intervals add the items' variance, below). A bootstrap over 3–5
seeds would be anti-conservative (its resampled means take few values and underestimate
the spread by (k-1)/k), hence the t reference distribution; tests/orchestrator/
test_report_calibration.py checks the false-positive rate of :func:`contrast` at
α on simulated identical methods with seed spreads of 0.5–3 points and 3–5 seeds.

**Equivalence** (:meth:`Contrast.tost_p`): two one-sided tests (Schuirmann's TOST) against
a declared margin ±m, with the same standard error and degrees of freedom: equivalent when
the (1 - 2α) interval of the difference lies inside (-m, m).

**Verdicts** (:func:`verdicts`): over a report's family of contrasts, the difference tests and
the equivalence tests are each Holm-corrected; a contrast reads *equivalent within ±m* where
its equivalence test rejects, else *better* or *worse* where its difference test rejects,
else *inconclusive*.

**Cells' intervals** (:func:`cell_interval`): the mean over seeds ± t · SE, with SE² the
seed variance over k plus the variance of the seed-mean over a bootstrap of the evaluation
items (whole groups, and whole passages where the items carry one), degrees of freedom by
Welch–Satterthwaite; with one seed, the bootstrap's percentile interval. Every resample is
drawn with a fixed seed, so a report is reproducible, and a bootstrap p-value is
(1 + extreme) / (B + 1), never 0 (:func:`bootstrap_p`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ptcore.metrics import METRICS

from orchestrator.ledger.cells import seed_stats

BOOTSTRAP_SEED = 0
BOOTSTRAP_B = 1000
CHANCE_SEED = 0
CHANCE_DRAWS = 200
# metrics slow enough (seqeval parses tag sequences each call) to get fewer resamples
SLOW_METRICS_B = {"entity_f1": 200, "entity_precision": 200, "entity_recall": 200}
# metrics that are a plain mean of a per-item score: resampled from per-item scores
MEAN_OF_ITEMS = ("accuracy", "squad_em", "squad_f1", "record_em", "record_f1")


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (ddof=1); None for fewer than 2 values (:func:`orchestrator.ledger.cells.seed_stats`)."""
    return seed_stats(xs).std


def metric_fn(name: str):
    return METRICS.get(name)


def resamples_for(metric: str, b: Optional[int] = None) -> int:
    """The resamples for ``metric``: the report's setting ``b`` (default 1000), fewer for the slow metrics."""
    b = BOOTSTRAP_B if b is None else int(b)
    return min(SLOW_METRICS_B.get(metric, b), b)


# ------------------------------------------------------------------ items and resamples


def as_items(values: Sequence[Any]) -> np.ndarray:
    """A 1-d array of per-item values (an object array where items are lists or mixed)."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged lists
        arr = None
    if arr is None or arr.ndim != 1:
        arr = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            arr[i] = v
    return arr


def units_of(groups: Optional[Sequence[Any]], n: int) -> list[np.ndarray]:
    """The resampling units: one per item, or the items of each group (first-seen order).
    ``groups`` may name passages (``clusters``: MultiRC paragraphs) as well as questions: the
    caller passes the coarsest key the items carry, so a passage is drawn whole."""
    from ptcore.tasks.io import indices_by_key  # the same units the data splits keep whole

    if groups is None or all(g is None for g in groups):
        return [np.array([i]) for i in range(n)]
    return [np.array(ix) for ix in indices_by_key([None if g is None else str(g) for g in groups])]


@dataclass
class Resample:
    items: np.ndarray  # item indices (repeats allowed)
    groups: Optional[np.ndarray]  # fresh group ids, one per drawn unit (None: items are units)


def draw_resamples(n: int, groups: Optional[Sequence[Any]], b: int, seed: int = BOOTSTRAP_SEED,
                   clusters: Optional[Sequence[Any]] = None) -> list[Resample]:
    """``b`` resamples of the ``n`` items with replacement: of whole passages where ``clusters``
    names them (MultiRC paragraphs), else of whole groups (questions), else of items. A unit
    drawn twice counts twice: its groups get fresh ids in each draw."""
    has_clusters = clusters is not None and not all(c is None for c in clusters)
    grouped = not (groups is None or all(g is None for g in groups))
    units = units_of(clusters if has_clusters else groups, n)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(b, len(units)))
    out = []
    for row in draws:
        if not grouped and not has_clusters:
            out.append(Resample(items=row, groups=None))
            continue
        picked = [units[u] for u in row]
        items = np.concatenate(picked)
        if grouped:  # fresh ids per (draw, original group): a question drawn twice counts twice
            keys = [(k, str(groups[i])) for k, p in enumerate(picked) for i in p]
            ids: dict = {}
            gids = np.array([ids.setdefault(key, len(ids)) for key in keys])
        else:
            gids = None
        out.append(Resample(items=items, groups=gids))
    return out


def score(metric: str, predictions: Sequence, references: Sequence, groups: Optional[Sequence] = None) -> float:
    """The metric ×100, by the task's own function."""
    return 100.0 * float(metric_fn(metric)(predictions, references, groups=groups))


def bootstrap_scores(metric: str, predictions: Sequence, references: Sequence, groups: Optional[Sequence],
                     resamples: Sequence[Resample]) -> np.ndarray:
    """The run's metric ×100 on every resample (``len(resamples)`` values)."""
    fn = metric_fn(metric)
    p, r = as_items(predictions), as_items(references)
    if metric in MEAN_OF_ITEMS:
        per_item = np.array([float(fn(p[i : i + 1], r[i : i + 1], groups=None)) for i in range(len(r))])
        whole = float(fn(p, r, groups=None if groups is None else list(groups)))
        if len(per_item) and abs(per_item.mean() - whole) < 1e-9:  # truly a mean of items: resample scores
            return np.array([100.0 * per_item[s.items].mean() for s in resamples])
    out = np.empty(len(resamples))
    for k, s in enumerate(resamples):
        g = None if s.groups is None else s.groups.tolist()
        out[k] = 100.0 * float(fn(p[s.items], r[s.items], groups=g))
    return out


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of ``d = 0``: ``min(1, 2 (1 + #extreme) / (B + 1))``, where
    #extreme counts the resamples on the far side of 0 (the smaller tail). Never 0: the
    smallest p that B resamples can support is ``2 / (B + 1)`` (:func:`p_floor`)."""
    d = np.asarray(diffs, dtype=float)
    extreme = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
    return float(min(1.0, 2.0 * (1 + extreme) / (len(d) + 1)))


def p_floor(b: int) -> float:
    """The smallest two-sided p that ``b`` bootstrap resamples can support."""
    return 2.0 / (b + 1)


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def method_scores(metric: str, runs: Sequence[dict], resamples: Sequence[Resample]) -> np.ndarray:
    """A method's metric ×100 on every resample, averaged over its runs (seeds): the
    quantity the paired test compares and the cell's interval is read from."""
    return np.mean([bootstrap_scores(metric, r["predictions"], r["references"], r.get("groups"), resamples) for r in runs], axis=0)


# ------------------------------------------------------------------ contrasts: tests over seeds


@dataclass(frozen=True)
class Contrast:
    """Method a against method b on one task, backbone and regime: the difference of their
    mean scores over seeds (x100), its standard error and degrees of freedom, and the test."""

    test: str  # "Welch t over seeds" | "paired t over data seeds"
    delta: float  # mean(a) - mean(b), points
    se: float
    df: float
    n_a: int
    n_b: int
    sd_a: float
    sd_b: float

    @property
    def t(self) -> float:
        return self.delta / self.se

    @property
    def p(self) -> float:
        """Two-sided p of ``delta = 0``."""
        from scipy import stats as st

        return float(min(1.0, 2.0 * st.t.sf(abs(self.t), self.df)))

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        from scipy import stats as st

        q = float(st.t.ppf(0.5 + level / 2, self.df))
        return self.delta - q * self.se, self.delta + q * self.se

    def tost_p(self, margin: float) -> float:
        """Equivalence within ±margin: the larger of the two one-sided p-values (Schuirmann)."""
        from scipy import stats as st

        lower = float(st.t.sf((self.delta + margin) / self.se, self.df))  # H0: delta <= -margin
        upper = float(st.t.cdf((self.delta - margin) / self.se, self.df))  # H0: delta >= +margin
        return max(lower, upper)

    def detectable(self, alpha: float, power: float = 0.8) -> float:
        """The smallest |difference| this design detects with ``power`` at two-sided level
        ``alpha``, given the spreads observed (noncentral t)."""
        return detectable_difference(self.se, self.df, alpha, power)


def detectable_difference(se: float, df: float, alpha: float, power: float = 0.8) -> float:
    """The |difference| whose two-sided t-test at ``alpha`` (``se``, ``df``) has ``power``."""
    from scipy import optimize
    from scipy import stats as st

    crit = float(st.t.ppf(1 - alpha / 2, df))

    def gap(delta: float) -> float:
        nc = delta / se
        p = float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc))
        if not math.isfinite(p):  # scipy's noncentral t fails far in the tail: the shifted central t there
            p = float(st.t.sf(crit - nc, df))
        return p - power

    hi = se * 4
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-6 * se))


def _paired_seeds(a: Sequence[dict], b: Sequence[dict]) -> Optional[list[int]]:
    """The seeds to pair on, where the runs' data samples differ by seed and both methods
    drew the same sample for each seed (the few-shot regime); None: no pairing."""
    da = {r["seed"]: r.get("data_seed") for r in a}
    db = {r["seed"]: r.get("data_seed") for r in b}
    common = sorted(set(da) & set(db))
    if len(common) < 2 or any(da[s] is None or da[s] != db[s] for s in common):
        return None
    if len({da[s] for s in common}) < 2:  # one sample for every seed: nothing seed-specific to pair
        return None
    return common


def contrast(runs_a: Sequence[dict], runs_b: Sequence[dict]) -> tuple[Optional[Contrast], str]:
    """(the test of a against b, "") or (None, why not tested). Each run is a dict with
    ``seed``, ``score`` (x100 on the evaluation items) and ``data_seed`` (the seed of its
    training sample, None where it trains on a fixed set)."""
    pairs = _paired_seeds(runs_a, runs_b)
    if pairs is not None:
        sa = {r["seed"]: r["score"] for r in runs_a}
        sb = {r["seed"]: r["score"] for r in runs_b}
        d = np.array([sa[k] - sb[k] for k in pairs], dtype=float)
        sd = float(np.std(d, ddof=1))
        if np.ptp(d) == 0.0:
            return None, f"the {len(pairs)} paired differences are identical: no seed variance to test against"
        return Contrast(test="paired t over data seeds", delta=float(d.mean()), se=sd / math.sqrt(len(d)), df=len(d) - 1.0,
                        n_a=len(d), n_b=len(d), sd_a=float(np.std([sa[k] for k in pairs], ddof=1)),
                        sd_b=float(np.std([sb[k] for k in pairs], ddof=1))), ""
    xa = np.array([r["score"] for r in runs_a], dtype=float)
    xb = np.array([r["score"] for r in runs_b], dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        return None, f"{min(len(xa), len(xb))} seed{'s' if min(len(xa), len(xb)) != 1 else ''}: a test over seeds needs 2 per method"
    va, vb = float(np.var(xa, ddof=1)) / len(xa), float(np.var(xb, ddof=1)) / len(xb)
    if np.ptp(xa) == 0.0 and np.ptp(xb) == 0.0:
        return None, "every seed of both methods scored the same: no seed variance to test against"
    df = (va + vb) ** 2 / ((va ** 2 / (len(xa) - 1) if va else 0.0) + (vb ** 2 / (len(xb) - 1) if vb else 0.0))
    return Contrast(test="Welch t over seeds", delta=float(xa.mean() - xb.mean()), se=math.sqrt(va + vb), df=float(df),
                    n_a=len(xa), n_b=len(xb), sd_a=float(np.std(xa, ddof=1)), sd_b=float(np.std(xb, ddof=1))), ""


BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"


def verdicts(tests: Sequence[Optional[Contrast]], margin: float, alpha: float
             ) -> list[tuple[Optional[str], Optional[float], Optional[float]]]:
    """(verdict, Holm-adjusted difference p, Holm-adjusted equivalence p) per contrast of one
    family (None where untested): *equivalent* where the equivalence test rejects at
    ``alpha`` after Holm, else *better* / *worse* where the difference test does, else
    *inconclusive*."""
    p_diff = holm([None if c is None else c.p for c in tests])
    p_eq = holm([None if c is None else c.tost_p(margin) for c in tests])
    out: list[tuple[Optional[str], Optional[float], Optional[float]]] = []
    for c, pd, pe in zip(tests, p_diff, p_eq):
        if c is None:
            out.append((None, None, None))
        elif pe is not None and pe < alpha:
            out.append((EQUIVALENT, pd, pe))
        elif pd is not None and pd < alpha:
            out.append((BETTER if c.delta > 0 else WORSE, pd, pe))
        else:
            out.append((INCONCLUSIVE, pd, pe))
    return out


def cell_interval(seed_scores: Sequence[float], boot: Optional[np.ndarray], level: float = 0.95) -> Optional[tuple[float, float]]:
    """A cell's interval: mean over seeds ± t·SE with SE² = (seed variance)/k + (variance of
    the seed-mean over the items' bootstrap ``boot``), Welch–Satterthwaite df; one seed: the
    bootstrap's percentile interval (None without a bootstrap)."""
    from scipy import stats as st

    k = len(seed_scores)
    if k == 0:
        return None
    if k == 1:
        return None if boot is None else percentile_ci(boot, level)
    m = float(np.mean(seed_scores))
    v_seed = float(np.var(seed_scores, ddof=1)) / k
    v_item = float(np.var(boot, ddof=1)) if boot is not None and len(boot) > 1 else 0.0
    v = v_seed + v_item
    if v == 0.0:
        return m, m
    df = v ** 2 / (v_seed ** 2 / (k - 1)) if v_seed > 0 else math.inf
    q = float(st.t.ppf(0.5 + level / 2, df)) if math.isfinite(df) else float(st.norm.ppf(0.5 + level / 2))
    half = q * math.sqrt(v)
    return m - half, m + half


# ------------------------------------------------------------------ multiple comparisons


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm-Bonferroni adjusted p-values (None stays None and does not count as a test):
    sorted ascending, ``p_(i) * (m - i + 1)``, made monotone, capped at 1."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(tested)
    out: list[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


# ------------------------------------------------------------------ reference points


def label_value(key: str, references: Sequence[Any]) -> Any:
    """A ``train_label_counts`` key ("0", "True", "entailment") as the references spell it."""
    for r in references:
        if str(r) == key:
            return r
    try:
        return int(key)
    except ValueError:
        return key


def majority_label(train_label_counts: dict[str, int]) -> str:
    """The most frequent training label (ties: the first in sorted key order)."""
    return sorted(train_label_counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def majority_score(metric: str, train_label_counts: dict[str, int], references: Sequence, groups=None) -> float:
    """The metric ×100 of predicting the most frequent training label for every item."""
    label = label_value(majority_label(train_label_counts), references)
    return score(metric, [label] * len(references), references, groups)


def chance_score(metric: str, label_set: Sequence[Any], references: Sequence, groups=None,
                 draws: int = CHANCE_DRAWS, seed: int = CHANCE_SEED) -> tuple[float, bool]:
    """(the expected metric x100 of uniform random labels, exact?). Accuracy: exactly 100/K
    whatever the label distribution. Other metrics (F1, MCC, ...): the mean over ``draws``
    seeded draws, a Monte-Carlo estimate, said so where it is shown."""
    labels = list(label_set)
    if metric == "accuracy" and labels:
        return 100.0 / len(labels), True
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        picks = rng.integers(0, len(labels), size=len(references))
        scores.append(score(metric, [labels[i] for i in picks], references, groups))
    return float(np.mean(scores)), False
