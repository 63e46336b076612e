"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import pytest

import json

from ptcore.metrics import METRICS, MetricInputs, compute, score_inputs


def metric(name: str):
    return METRICS.get(name)


def test_accuracy():
    assert metric("accuracy")([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(0.75)


def test_binary_f1_positive_class():
    # TP = 2 (items 0, 4), FP = 1 (item 1), FN = 1 (item 3): P = R = 2/3
    preds, refs = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metric("f1")(preds, refs) == pytest.approx(2 / 3)
    assert metric("f1")([0, 0], [0, 0]) == 0.0  # no positives anywhere: 0, not a warning


def test_macro_f1_three_classes():
    refs = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 2, 0]
    # class 0: P 1/2, R 1/2 -> 0.5; class 1: P 2/3, R 1 -> 0.8; class 2: P 1, R 1/2 -> 2/3
    assert metric("macro_f1")(preds, refs) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_averages_reference_classes_only():
    # class 2 is only predicted, never a reference: class 0 F1 2/3, class 1 F1 1
    assert metric("macro_f1")([0, 2, 1, 1], [0, 0, 1, 1]) == pytest.approx((2 / 3 + 1) / 2)


def test_numpy_accuracy_and_f1_match_sklearn():
    """accuracy / f1 / macro_f1 are hand-written (no sklearn import per worker): same values."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    for n, classes in ((1, 2), (7, 2), (50, 3), (200, 5)):
        refs, preds = rng.integers(0, classes, n).tolist(), rng.integers(0, classes + 1, n).tolist()
        assert metric("accuracy")(preds, refs) == pytest.approx(accuracy_score(refs, preds))
        assert metric("f1")(preds, refs) == pytest.approx(f1_score(refs, preds, labels=[1], average="macro", zero_division=0))
        labels = sorted(set(refs))
        assert metric("macro_f1")(preds, refs) == pytest.approx(f1_score(refs, preds, labels=labels, average="macro", zero_division=0))


def test_mcc():
    # TP 1, TN 2, FP 1, FN 0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2)
    assert metric("mcc")([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / math.sqrt(12))
    assert metric("mcc")([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert metric("mcc")([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_pearson_and_spearman():
    # x = [1, 2, 3], y = [1, 3, 2]: cov 1, var 2 and 2 -> r = 0.5; ranks equal the values
    assert metric("pearson")([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert metric("spearman")([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # monotone but not linear: Spearman 1, Pearson below 1
    x, y = [1, 2, 3, 4], [1, 4, 9, 16]
    assert metric("spearman")(x, y) == pytest.approx(1.0)
    assert metric("pearson")(x, y) < 0.99
    assert metric("pearson")([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(-1.0)


def test_correlation_of_constant_predictions_is_zero():
    assert metric("pearson")([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert metric("spearman")([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


def test_multirc_f1a_and_em():
    preds = [1, 0, 1, 0, 0]
    refs = [1, 0, 1, 1, 0]
    groups = ["a", "a", "b", "b", "c"]
    # F1a: TP 2, FP 0, FN 1 -> P 1, R 2/3 -> 0.8; EM: a right, b wrong, c right
    assert metric("f1a")(preds, refs) == pytest.approx(0.8)
    assert metric("em")(preds, refs, groups=groups) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="groups"):
        metric("em")(preds, refs)


def test_compute_by_names():
    scores = compute(["accuracy", "f1"], [1, 0, 1], [1, 1, 1])
    assert scores == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(0.8)}


def test_unknown_metric_suggests():
    with pytest.raises(KeyError, match="did you mean 'accuracy'"):
        metric("acuracy")


def test_score_inputs_is_compute_over_the_items():
    inputs = MetricInputs([1, 0, 1, 0, 0], [1, 0, 1, 1, 0], ["a", "a", "b", "b", "c"])
    assert score_inputs(["f1a", "em"], inputs) == {"f1a": pytest.approx(0.8), "em": pytest.approx(2 / 3)}
    assert score_inputs(["f1a", "em"], inputs) == compute(["f1a", "em"], *inputs)
    assert MetricInputs.from_dict(json.loads(json.dumps(inputs.as_dict()))) == inputs
    assert MetricInputs((1, 0), (1, 1)).predictions == [1, 0]  # tuples become lists (JSON arrays)
    assert MetricInputs([1], [1]).groups is None
    # no item (e.g. a split without labelled sentences): no score, not a made-up 0
    assert all(math.isnan(v) for v in score_inputs(["accuracy", "entity_f1"], MetricInputs([], [])).values())


def test_record_em_f1_hand_computed():
    em, f1 = metric("record_em"), metric("record_f1")
    # max over golds: "Obama" equals the second gold; "Obama" vs "Barack Obama": P 1, R 1/2 -> 2/3
    assert em(["Obama"], [["Barack Obama", "Obama"]]) == 1.0
    assert f1(["Obama"], [["Barack Obama"]]) == pytest.approx(2 / 3)
    # mean over queries; a miss (no shared token) is 0
    assert f1(["Obama", "Rome", "the U.S."], [["Barack Obama"], ["Paris"], ["U.S"]]) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert em(["Obama", "Rome", "the U.S."], [["Barack Obama"], ["Paris"], ["U.S"]]) == pytest.approx(1 / 3)
    # official ReCoRD (SQuAD v1.1) F1: no shared token is 0 even when both sides normalise to ""
    assert f1(["the"], [["a"]]) == 0.0 and metric("squad_f1")(["the"], [["a"]]) == 1.0
