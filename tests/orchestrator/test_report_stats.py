"""The report's statistics and names, one behaviour per test: the paired bootstrap (pooled
across seeds, items or whole groups), Holm's correction, majority class and chance, readable
hyperparameters, data notes, method colours and the pre-training table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.report import stats
from orchestrator.report.build import _note_splits, build_report
from orchestrator.common.labels import METHOD_ORDER, fmt_sig, hparam_name, method_style, readable_params
from orchestrator.report.load import load_results

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "with_predictions"


def runs(predictions: list[list], references: list, groups=None) -> list[dict]:
    return [{"predictions": p, "references": references, "groups": groups} for p in predictions]


def noisy(refs: list[int], acc: float, rng: np.random.Generator) -> list[int]:
    return [r if rng.random() < acc else 1 - r for r in refs]


# ------------------------------------------------------------------ the items' bootstrap (cells' intervals)


def test_method_scores_average_each_method_over_its_seeds():
    """Each resample scores every seed's run on the same items and averages them."""
    rng = np.random.default_rng(4)
    refs = rng.integers(0, 2, 400).tolist()
    seeds = [noisy(refs, 0.6, rng), list(refs), noisy(refs, 0.6, rng)]
    res = stats.draw_resamples(400, None, 50)
    pooled = stats.method_scores("accuracy", runs(seeds, refs), res)
    each = [stats.bootstrap_scores("accuracy", p, refs, None, res) for p in seeds]
    assert np.allclose(pooled, np.mean(each, axis=0))


def test_bootstrap_p_formula():
    """(1 + extreme) / (B + 1), two-sided: never 0."""
    assert stats.bootstrap_p(np.array([1.0, 2.0, -1.0, 3.0])) == pytest.approx(0.8)  # 2 (1 + 1) / 5
    assert stats.bootstrap_p(np.array([-1.0, -2.0, 1.0])) == 1.0  # 2 (1 + 1) / 4
    assert stats.bootstrap_p(np.array([1.0, 2.0])) == pytest.approx(2 / 3)  # no resample at or below 0: 2/(B+1)
    assert stats.bootstrap_p(np.array([0.0, 0.0])) == 1.0  # capped at 1
    assert stats.p_floor(1000) == pytest.approx(2 / 1001)


def test_bootstrap_is_seeded():
    a = stats.draw_resamples(100, None, 20)
    b = stats.draw_resamples(100, None, 20)
    assert all((x.items == y.items).all() for x, y in zip(a, b))
    c = stats.draw_resamples(100, None, 20, seed=1)
    assert any((x.items != y.items).any() for x, y in zip(a, c))  # the seed is what fixes it


def test_mean_of_items_shortcut_equals_the_metric_on_resampled_items():
    rng = np.random.default_rng(6)
    refs = rng.integers(0, 3, 80).tolist()
    preds = rng.integers(0, 3, 80).tolist()
    res = stats.draw_resamples(80, None, 50)
    fast = stats.bootstrap_scores("accuracy", preds, refs, None, res)
    direct = [100 * stats.metric_fn("accuracy")(np.array(preds)[r.items], np.array(refs)[r.items]) for r in res]
    assert np.allclose(fast, direct)
    answers = [["Paris"], ["a dog"], ["1999"], [""]]
    said = ["paris", "the cat", "in 1999", ""]
    res = stats.draw_resamples(4, None, 30)
    fast = stats.bootstrap_scores("squad_f1", said, answers, None, res)
    direct = [100 * stats.metric_fn("squad_f1")([said[i] for i in r.items], [answers[i] for i in r.items]) for r in res]
    assert np.allclose(fast, direct)


def test_slow_metrics_get_fewer_resamples():
    assert stats.resamples_for("accuracy") == stats.BOOTSTRAP_B == 1000
    assert stats.resamples_for("entity_f1") < 1000
    assert stats.resamples_for("accuracy", 2000) == 2000  # the report's setting (report.bootstrap_resamples)
    assert stats.resamples_for("entity_f1", 100) == 100


# ------------------------------------------------------------------ groups


def test_groups_are_resampled_whole_with_fresh_ids():
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    members = {"a": list(range(5)), "b": [5, 6, 7], "c": [8, 9]}
    res = stats.draw_resamples(10, groups, 200)
    for r in res:
        ids = r.groups.tolist()
        assert len(set(ids)) == 3  # three units drawn, three fresh ids (a group drawn twice counts twice)
        for gid in set(ids):
            assert sorted(r.items[r.groups == gid].tolist()) in members.values()
    assert any(len(r.items) != 10 for r in res)  # group sizes differ: whole groups, not 10 items


def test_items_are_the_units_without_groups():
    for groups in (None, [None] * 6):
        res = stats.draw_resamples(6, groups, 20)
        assert all(r.groups is None and len(r.items) == 6 for r in res)
        assert any(len(set(r.items.tolist())) < 6 for r in res)  # with replacement


def test_a_group_drawn_twice_counts_twice():
    """MultiRC EM scores questions (groups): a question drawn twice is two questions."""
    preds, refs = [1, 1, 0, 0], [1, 1, 1, 0]  # question q0 right, q1 wrong
    groups = ["q0", "q0", "q1", "q1"]
    twice_q0 = stats.Resample(items=np.array([0, 1, 0, 1, 2, 3]), groups=np.array([0, 0, 1, 1, 2, 2]))
    assert stats.bootstrap_scores("em", preds, refs, groups, [twice_q0])[0] == pytest.approx(100 * 2 / 3)


def test_passages_are_resampled_whole_and_their_questions_stay_apart():
    """MultiRC: a paragraph (cluster) is drawn whole; its questions keep separate group ids,
    fresh in each draw."""
    clusters = ["p0"] * 4 + ["p1"] * 2
    groups = ["q0", "q0", "q1", "q1", "q2", "q2"]
    for r in stats.draw_resamples(6, groups, 100, clusters=clusters):
        items = r.items.tolist()
        assert len(items) in (4, 6, 8, 12) or len(items) % 2 == 0
        # every drawn paragraph brings all its items: counts of 0..3 and 4..5 come in whole blocks
        assert items.count(0) == items.count(3) and items.count(4) == items.count(5)
        for gid in set(r.groups.tolist()):
            members = {groups[i] for i in r.items[r.groups == gid]}
            assert len(members) == 1 and len(r.items[r.groups == gid]) == 2  # one question, drawn once


# ------------------------------------------------------------------ Holm


def test_holm_hand_computed():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([None, 0.01, 0.02]) == [None, pytest.approx(0.02), pytest.approx(0.02)]  # m = 2 tests
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # capped
    assert stats.holm([]) == []


# ------------------------------------------------------------------ majority and chance


def test_majority_class_uses_the_training_counts_on_the_references():
    refs = [0, 0, 0, 1]
    assert stats.majority_score("accuracy", {"0": 5, "1": 2}, refs) == 75.0
    assert stats.majority_score("accuracy", {"0": 2, "1": 5}, refs) == 25.0  # training majority, not val's
    assert stats.majority_score("accuracy", {"1": 3, "0": 3}, refs) == 75.0  # ties: the first key
    assert stats.majority_score("f1", {"0": 5, "1": 2}, refs) == 0.0  # all-negative: F1 of class 1 is 0
    assert stats.majority_score("accuracy", {"neutral": 1, "entailment": 4}, ["entailment", "neutral"]) == 50.0


def test_chance_exact_for_accuracy_and_estimated_otherwise():
    refs = [0, 1] * 100
    assert stats.chance_score("accuracy", [0, 1], refs) == (50.0, True)
    assert stats.chance_score("accuracy", [0, 1, 2], [0] * 50 + [1]) == (pytest.approx(100 / 3), True)  # 1/K whatever the labels
    value, exact = stats.chance_score("f1", [0, 1], [0] * 150 + [1] * 50)
    assert not exact and value == pytest.approx(100 * 2 * 0.25 * 0.5 / 0.75, abs=2)
    assert stats.chance_score("f1", [0, 1], refs) == stats.chance_score("f1", [0, 1], refs)  # seeded


def _small_ledger(tmp_path: Path, keep) -> Path:
    """A copy of the with_predictions fixture restricted to some rows (fast to build)."""
    out = tmp_path / "study"
    shutil.copytree(FIXTURE / "predictions", out / "predictions")
    rows = pd.read_csv(FIXTURE / "results.csv", dtype=str, keep_default_na=False)
    keep(rows).to_csv(out / "results.csv", index=False)
    return out


def test_report_references_and_noise_marks(tmp_path):
    study = _small_ledger(tmp_path, lambda r: r[(r.backbone == "MiniLM-L2") & (r.task == "superglue/cb")])
    rep = build_report(load_results(study), {"versions": {}})
    assert rep.majority["superglue/cb"] == pytest.approx(100 * 23 / 56)
    assert rep.chance["superglue/cb"] == pytest.approx(100 / 3) and rep.chance_exact["superglue/cb"]
    cells = {r.method: r.cells["superglue/cb"] for r in rep.rows}
    assert cells["prompt_tuning"].near_majority and not cells["finetune"].near_majority
    lo, hi = cells["prompt_tuning"].interval
    assert lo <= rep.majority["superglue/cb"] and lo < cells["prompt_tuning"].mean < hi
    # the interval holds the seeds' spread: wider than the items' bootstrap alone
    pt = cells["prompt_tuning"]
    boot_lo, boot_hi = stats.percentile_ci(pt.boot)
    assert hi - lo > boot_hi - boot_lo


def test_span_and_regression_tasks_get_no_majority(tmp_path):
    def as_ner(r):
        r = r[(r.backbone == "MiniLM-L2") & (r.task == "glue/sst2")].copy()
        r["task"] = "ner/wnut17"  # a tag task: no label set, whatever the ledger says
        return r

    rep = build_report(load_results(_small_ledger(tmp_path, as_ner)), {"versions": {}})
    assert rep.majority["ner/wnut17"] is None and rep.chance["ner/wnut17"] is None
    assert rep.reference_why["ner/wnut17"] == "not a label task"


def test_a_score_that_predictions_do_not_reproduce_is_reported(tmp_path):
    def tamper(r):
        r = r[(r.backbone == "MiniLM-L2") & (r.task == "glue/sst2")].copy()
        i = r.index[(r.phase == "final") & (r.method == "finetune") & (r.seed == "0")][0]
        r.loc[i, "val_primary"] = "0.99"
        return r

    rep = build_report(load_results(_small_ledger(tmp_path, tamper)), {"versions": {}})
    assert any("seed 0: its predictions give" in n and "the ledger says 99.00" in n for n in rep.stat_notes)


def test_no_predictions_means_nothing_is_marked(tmp_path):
    def strip(r):
        r = r[r.backbone == "MiniLM-L2"].copy()
        r["predictions"] = ""
        return r

    rep = build_report(load_results(_small_ledger(tmp_path, strip)), {"versions": {}})
    assert not rep.has_predictions
    assert rep.tested  # the contrasts test the ledger's per-seed scores: predictions are not needed
    assert not any(c.interval is not None or c.near_majority for r in rep.rows for c in r.cells.values())


# ------------------------------------------------------------------ names and notes


def test_readable_hyperparameters():
    params = {"method_args.tau0": 1.31732, "lr": 3e-4, "method_args.prompt_length": 16, "method_args.depth": 4}
    assert readable_params(params) == "lr=3e-4, prompt length=16, depth=4, τ0=1.32"
    assert readable_params({"depth": None, "lr": 0.000103805}) == "lr=1.04e-4, depth=all layers"
    assert readable_params({"reparameterize": True, "pooling": "mean"}) == "pooling=mean, reparameterization=yes"
    assert hparam_name("method_args.pool_size") == "pool size"
    assert [fmt_sig(v) for v in (7.07691e-05, 0.0205541, 1.31732, 123456.0, 0.01, 2.0)] == [
        "7.08e-5", "0.0206", "1.32", "1.23e5", "0.01", "2"]


def test_data_notes_say_what_was_subsampled_or_carved():
    sub, carved = _note_splits([
        "dev = 10% of the official train split (seed 20220527)",
        "train subsampled to 700 examples (seed 20220528)",
        "val subsampled to 200 of 872 examples",
    ])
    assert sub == {"train": "subset", "val": "of 872"} and carved == {"dev": True}
    sub, carved = _note_splits(["no official train file: train/dev/val carved 60/10/30 from the official "
                                "validation file (seed 1); val is a 30% subset, not the full official split"])
    assert carved == {"train": True, "dev": True, "val": True}
    assert _note_splits(["dev carved from train (10%)", "train subsampled to 700 of 67349 examples"]) == (
        {"train": "of 67,349"}, {"dev": True})


def test_method_colours_are_fixed_and_distinct():
    known = [method_style(m) for m in METHOD_ORDER]
    assert len({c for c, _ in known}) == len(known) and len({m for _, m in known}) == len(known)
    # a method the report does not know: the same colour in every report (a stable hash, not hash())
    assert method_style("dp_a") == ("#17BECF", "P")


def test_pretraining_overlap_table():
    from ptcore.backbones import PACKAGED, PRETRAINING_DATA, packaged_path, pretraining_overlap
    from ptcore.tasks import TASKS

    for model, tasks in PRETRAINING_DATA.items():
        assert set(tasks) <= set(TASKS), f"{model}: unknown task names {set(tasks) - set(TASKS)}"
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    assert minilm in PACKAGED  # the id the studies use is the packaged model's
    assert pretraining_overlap(minilm, "glue/qqp") and pretraining_overlap("minilm", "glue/mnli")
    assert pretraining_overlap(minilm, "glue/sst2") is None and pretraining_overlap(minilm, "superglue/cb") is None
    assert pretraining_overlap("bert-base-cased", "glue/qqp") is None
    local = packaged_path(minilm)
    if local is not None:
        assert pretraining_overlap(str(local), "qa/squad") == pretraining_overlap(minilm, "qa/squad") is not None


def test_plot_has_no_panel_for_a_task_without_data(tmp_path):
    from orchestrator.report.plots import make_figure, panels

    def fail_cb(r):
        r = r[r.task.isin(["glue/sst2", "superglue/cb"])].copy()
        r.loc[(r.task == "superglue/cb") & (r.phase == "final"), "status"] = "error"
        return r

    rep = build_report(load_results(_small_ledger(tmp_path, fail_cb)), {"versions": {}})
    assert [t for t, _ in panels(rep)] == ["glue/sst2"]  # no CB panel, no average of one task
    fig = make_figure(rep)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1


def test_plot_y_axis_holds_the_error_bars(tmp_path):
    from orchestrator.report.plots import make_figure

    def sst2_without_references(r):
        r = r[(r.task == "glue/sst2") & (r.backbone == "MiniLM-L2")].copy()
        r["data_json"] = ""  # no label counts: no reference lines to widen the axis
        return r

    rep = build_report(load_results(_small_ledger(tmp_path, sst2_without_references)), {"versions": {}})
    assert rep.majority["glue/sst2"] is None
    (ax,) = [a for a in make_figure(rep).axes if a.get_visible()]
    lo, hi = ax.get_ylim()
    ends = [(c.mean - c.std, c.mean + c.std) for c in (r.cells["glue/sst2"] for r in rep.rows)]
    assert lo <= min(e[0] for e in ends) and max(e[1] for e in ends) <= hi
    assert hi - lo < 1.3 * (max(e[1] for e in ends) - min(e[0] for e in ends))  # fitted, not 0..100


def test_predictions_a_metric_cannot_score_are_reported_not_raised(tmp_path):
    import json

    def em_without_groups(r):
        r = r[(r.task == "superglue/multirc") & (r.backbone == "MiniLM-L2")].copy()
        r["primary_metric"] = "em"  # MultiRC EM needs the question ids (groups)
        return r

    study = _small_ledger(tmp_path, em_without_groups)
    for path in (study / "predictions").glob("*multirc*.json"):
        data = json.loads(path.read_text())
        data["val"]["groups"] = None
        path.write_text(json.dumps(data))
    rep = build_report(load_results(study), {"versions": {}})
    assert any("could not be scored (ValueError" in n for n in rep.stat_notes)
    assert rep.majority["superglue/multirc"] is None
    assert not any(c.interval for r in rep.rows for c in r.cells.values())


def test_a_cell_wholly_below_the_majority_class_is_marked(tmp_path):
    """Fine-tuning that always says the rarest CB label (5 of 56): its whole interval lies below
    the majority class (41.1), so it is marked, and never bold."""
    import json

    def cb(r):
        r = r[(r.backbone == "MiniLM-L2") & (r.task == "superglue/cb")].copy()
        r.loc[(r.phase == "final") & (r.method == "finetune"), "val_primary"] = str(5 / 56)
        return r

    study = _small_ledger(tmp_path, cb)
    rows = pd.read_csv(study / "results.csv", dtype=str, keep_default_na=False)
    for rel in rows[(rows.phase == "final") & (rows.method == "finetune")].predictions:
        data = json.loads((study / rel).read_text())
        data["val"]["predictions"] = [2] * len(data["val"]["references"])
        (study / rel).write_text(json.dumps(data))
    rep = build_report(load_results(study), {"versions": {}})
    ft = next(r for r in rep.rows if r.method == "finetune").cells["superglue/cb"]
    assert ft.interval[1] < rep.majority["superglue/cb"] and ft.near_majority
