"""The report's statistics: means, the paired bootstrap over evaluation items, Holm's
correction, and the majority-class and chance references.

Every score is recomputed with the task's own metric function, ``METRICS.get(name)(predictions,
references, groups=groups)``, on the per-item inputs a run stored (its ``predictions`` file).

Paired bootstrap (pooled across seeds): draw ``B`` resamples of the evaluation items with
replacement (of whole groups where the items have groups, e.g. MultiRC questions; each drawn
group gets a fresh id so a group drawn twice counts twice); in every resample score each run
on the same items, average each method over its seeds, and take the difference. The
two-sided p-value is ``min(1, 2 min(P(d* <= 0), P(d* >= 0)))``. The resamples are drawn with
a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

BOOTSTRAP_SEED = 0
BOOTSTRAP_B = 1000
CHANCE_SEED = 0
CHANCE_DRAWS = 200
ALPHA = 0.05
# metrics slow enough (seqeval parses tag sequences each call) to get fewer resamples
SLOW_METRICS_B = {"entity_f1": 200, "entity_precision": 200, "entity_recall": 200}
# metrics that are a plain mean of a per-item score: resampled from per-item scores
MEAN_OF_ITEMS = ("accuracy", "squad_em", "squad_f1", "record_em", "record_f1")


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> Optional[float]:
    """Sample standard deviation (ddof=1); None for fewer than 2 values."""
    if len(xs) < 2:
        return None
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def metric_fn(name: str):
    from ptcore.metrics import METRICS

    return METRICS.get(name)


def resamples_for(metric: str) -> int:
    return SLOW_METRICS_B.get(metric, BOOTSTRAP_B)


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
    """The resampling units: one per item, or the items of each group (first-seen order)."""
    from ptcore.tasks.io import indices_by_key  # the same units the data splits keep whole

    if groups is None or all(g is None for g in groups):
        return [np.array([i]) for i in range(n)]
    return [np.array(ix) for ix in indices_by_key([None if g is None else str(g) for g in groups])]


@dataclass
class Resample:
    items: np.ndarray  # item indices (repeats allowed)
    groups: Optional[np.ndarray]  # fresh group ids, one per drawn unit (None: items are units)


def draw_resamples(n: int, groups: Optional[Sequence[Any]], b: int, seed: int = BOOTSTRAP_SEED) -> list[Resample]:
    units = units_of(groups, n)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(b, len(units)))
    grouped = not (groups is None or all(g is None for g in groups))
    out = []
    for row in draws:
        if not grouped:
            out.append(Resample(items=row, groups=None))
            continue
        picked = [units[u] for u in row]
        items = np.concatenate(picked)
        gids = np.repeat(np.arange(len(picked)), [len(p) for p in picked])
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
    """Two-sided p of the paired bootstrap: ``min(1, 2 min(P(d* <= 0), P(d* >= 0)))``."""
    d = np.asarray(diffs, dtype=float)
    return float(min(1.0, 2.0 * min(np.mean(d <= 0), np.mean(d >= 0))))


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_bootstrap(metric: str, runs_a: Sequence[dict], runs_b: Sequence[dict], b: Optional[int] = None,
                     seed: int = BOOTSTRAP_SEED) -> float:
    """p of ``a`` vs ``b``: each run a ``{"predictions", "references", "groups"}`` on the same
    items (all runs of both methods share the references); each resample scores every run on
    the same items, averages each method over its runs (seeds) and compares the two means."""
    first = runs_a[0]
    n = len(first["references"])
    res = draw_resamples(n, first.get("groups"), b or resamples_for(metric), seed)
    return bootstrap_p(method_scores(metric, runs_a, res) - method_scores(metric, runs_b, res))


def method_scores(metric: str, runs: Sequence[dict], resamples: Sequence[Resample]) -> np.ndarray:
    """A method's metric ×100 on every resample, averaged over its runs (seeds): the
    quantity the paired test compares and the cell's interval is read from."""
    return np.mean([bootstrap_scores(metric, r["predictions"], r["references"], r.get("groups"), resamples) for r in runs], axis=0)


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
                 draws: int = CHANCE_DRAWS, seed: int = CHANCE_SEED) -> float:
    """The expected metric ×100 of uniform random labels: the mean over ``draws`` seeded draws."""
    rng = np.random.default_rng(seed)
    labels = list(label_set)
    scores = []
    for _ in range(draws):
        picks = rng.integers(0, len(labels), size=len(references))
        scores.append(score(metric, [labels[i] for i in picks], references, groups))
    return float(np.mean(scores))
