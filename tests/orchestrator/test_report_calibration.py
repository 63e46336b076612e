"""The report's test is calibrated: on two *identical* methods whose seeds spread by 0.5–3
points, with 3–5 seeds each, :func:`orchestrator.report.stats.contrast` rejects at α about
α of the time, within Monte-Carlo error. The item-only paired bootstrap this replaced
rejected 11–22% of the time in the same setting: put it back in ``contrast`` and this fails.

Each simulated trained model predicts the items of one fixed evaluation set; its accuracy
is a seed draw (the procedure's mean + N(0, spread)), and which items it gets wrong follows
the items' shared difficulty plus a little per-model noise, so models agree on most items
as real seeds do. The score of a run goes through the task's own metric (``stats.score``),
as the report computes it.
"""

import numpy as np
import pytest

from orchestrator.report import stats

ALPHA = 0.05
SIMS = 1200
N_ITEMS = 200


def _model(rng, difficulty, refs, accuracy):
    noisy = difficulty + rng.normal(0, 0.3, len(difficulty))
    correct = np.zeros(len(refs), dtype=bool)
    k = int(round(np.clip(accuracy, 0, 1) * len(refs)))
    correct[np.argsort(noisy)[:k]] = True
    return np.where(correct, refs, 1 - refs)


def _runs(rng, k, spread, difficulty, refs, sample_effects=None):
    runs = []
    for s in range(k):
        acc = 0.75 + rng.normal(0, spread / 100) + (0 if sample_effects is None else sample_effects[s])
        preds = _model(rng, difficulty, refs, acc)
        runs.append({"seed": s, "data_seed": None if sample_effects is None else 100 + s,
                     "score": stats.score("accuracy", preds.tolist(), refs.tolist()),
                     "predictions": preds.tolist(), "references": refs.tolist(), "groups": None})
    return runs


def _false_positive_rate(k, spread, seed, few_shot=False):
    rng = np.random.default_rng(seed)
    rejected = tested = 0
    for _ in range(SIMS):
        refs = rng.integers(0, 2, N_ITEMS)
        difficulty = rng.normal(0, 1, N_ITEMS)
        effects = rng.normal(0, 0.04, k) if few_shot else None  # each seed's training sample moves both methods alike
        c, _ = stats.contrast(_runs(rng, k, spread, difficulty, refs, effects), _runs(rng, k, spread, difficulty, refs, effects))
        if c is None:
            continue
        tested += 1
        rejected += c.p < ALPHA
    return rejected / tested


def _mc_bound(n=SIMS, sds=3.5):
    return sds * (ALPHA * (1 - ALPHA) / n) ** 0.5


@pytest.mark.parametrize("k,spread", [(3, 0.5), (3, 3.0), (4, 1.5), (5, 0.5), (5, 3.0)])
def test_identical_methods_rejected_at_alpha(k, spread):
    rate = _false_positive_rate(k, spread, seed=k * 100 + int(spread * 10))
    assert abs(rate - ALPHA) < _mc_bound(), f"{k} seeds, spread {spread}: false-positive rate {rate:.3f} at α = {ALPHA}"


@pytest.mark.parametrize("k", [3, 5])
def test_paired_few_shot_samples_rejected_at_alpha(k):
    """Few-shot: seed s of both methods trains on sample s (its data seed), whose effect
    (4 points here) both share: the paired test over data seeds is calibrated too."""
    rate = _false_positive_rate(k, 1.5, seed=7 + k, few_shot=True)
    assert abs(rate - ALPHA) < _mc_bound(), f"few-shot, {k} seeds: false-positive rate {rate:.3f}"


def test_a_real_difference_is_found():
    """Power, so the calibration is not bought by never rejecting: 5 seeds, spread 1, +4 points."""
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        refs = rng.integers(0, 2, N_ITEMS)
        difficulty = rng.normal(0, 1, N_ITEMS)
        a = _runs(rng, 5, 1.0, difficulty, refs)
        b = _runs(rng, 5, 1.0, difficulty, refs)
        for r in a:
            r["score"] += 4.0
        c, _ = stats.contrast(a, b)
        hits += c is not None and c.p < ALPHA
    assert hits / 200 > 0.8


def test_equivalence_and_verdicts():
    a = [{"seed": s, "score": v, "data_seed": None} for s, v in enumerate([75.0, 75.4, 74.8, 75.2, 75.1])]
    b = [{"seed": s, "score": v, "data_seed": None} for s, v in enumerate([75.2, 74.9, 75.3, 75.0, 74.7])]
    c, _ = stats.contrast(a, b)
    assert c.test == "Welch t over seeds" and abs(c.delta - 0.08) < 1e-9
    assert c.tost_p(2.0) < 0.001 and c.tost_p(0.05) > 0.4  # inside ±2 for sure; ±0.05 can't be shown
    worse = [{"seed": s, "score": v - 6, "data_seed": None} for s, v in enumerate([75.0, 75.4, 74.8, 75.2, 75.1])]
    wide = [{"seed": s, "score": v, "data_seed": None} for s, v in enumerate([60.0, 80.0, 70.0])]
    tests = [c, stats.contrast(worse, b)[0], stats.contrast(wide, b)[0], None]
    out = stats.verdicts(tests, margin=2.0, alpha=0.05)
    assert [v for v, _, _ in out] == [stats.EQUIVALENT, stats.WORSE, stats.INCONCLUSIVE, None]
    # Holm over the 3 tested: the adjusted p is at least the raw one
    assert out[1][1] >= tests[1].p and out[3] == (None, None, None)


def test_untestable_cells_say_why():
    one = [{"seed": 0, "score": 70.0, "data_seed": None}]
    two = [{"seed": 0, "score": 70.0, "data_seed": None}, {"seed": 1, "score": 71.0, "data_seed": None}]
    c, why = stats.contrast(one, two)
    assert c is None and "1 seed" in why
    same = [{"seed": s, "score": 52.7, "data_seed": None} for s in range(3)]
    c, why = stats.contrast(same, same)
    assert c is None and "no seed variance" in why


def test_bootstrap_p_is_never_zero():
    d = np.ones(999)
    assert stats.bootstrap_p(d) == pytest.approx(2 / 1000) == stats.p_floor(999)
    assert stats.bootstrap_p(np.r_[np.ones(500), -np.ones(499)]) == 1.0


def test_detectable_difference():
    # one-sample z-like check: large df, se 1 -> about (1.96 + 0.84) = 2.80
    assert stats.detectable_difference(1.0, 1e6, 0.05) == pytest.approx(2.80, abs=0.01)
    assert stats.detectable_difference(1.0, 4, 0.05) > 3.5  # few degrees of freedom cost power


def test_chance_is_exact_for_accuracy():
    assert stats.chance_score("accuracy", [0, 1, 2], [0, 0, 1, 2]) == (pytest.approx(100 / 3), True)
    value, exact = stats.chance_score("f1_macro", [0, 1], [0, 1, 1, 1]) if "f1_macro" in _metrics() else (0.0, False)
    assert not exact


def _metrics():
    from ptcore.metrics import METRICS

    return METRICS


def test_cell_interval_adds_seed_variance():
    boot = np.random.default_rng(0).normal(75, 1.0, 1000)  # items: sd 1 of the seed-mean
    lo, hi = stats.cell_interval([72.0, 75.0, 78.0], boot)
    lo1, hi1 = stats.cell_interval([75.0, 75.0, 75.0], boot)
    assert hi - lo > hi1 - lo1 > 3.5  # the seeds' spread widens it; the items' alone ~ ±1.96
