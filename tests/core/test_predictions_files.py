"""predictions/<split>.jsonl: one line per reported example (id, prediction, gold in the
task's label space) that reproduces the result's metrics (lm-evaluation-harness's
``--log_samples``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import make_run_config
from ptcore.metrics import compute
from ptcore.tasks import get_task, load_splits
from ptcore.train import train


def run(tmp_path: Path, task: str, **kw) -> tuple[dict, Path]:
    """One epoch of P-Tuning v2 on a fixture task with a tiny BERT, written to ``tmp_path/out``."""
    values = {"task": task, "method": "ptuning_v2", "method_args": {"prompt_length": 3}, "data_dir": str(FIXTURES),
              "epochs": 1, "batch_size": 4, "lr": 1e-2, "seed": 0}
    values.update(kw)
    out = tmp_path / "out"
    result = train(make_run_config(values), backbone=tiny_backbone("bert", tmp_path / "model"), output=out, progress=False)
    return result, out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def raw_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accuracy(rows: list[dict]) -> float:
    return sum(r["prediction"] == r["gold"] for r in rows) / len(rows)


def test_classification_label_names(tmp_path):
    result, out = run(tmp_path, "superglue/cb")
    assert result["predictions_files"] == {"val": "predictions/val.jsonl"}
    assert json.loads((out / "result.json").read_text())["predictions_files"] == result["predictions_files"]
    rows = lines(out / result["predictions_files"]["val"])
    raw = raw_records(FIXTURES / "superglue/CB/val.jsonl")
    assert len(rows) == len(raw) == result["data"]["sizes"]["val"]
    assert [r["id"] for r in rows] == [rec["idx"] for rec in raw]  # the data's own ids, in file order
    assert [r["gold"] for r in rows] == [rec["label"] for rec in raw]  # "entailment", ... as in the file
    assert {r["prediction"] for r in rows} <= set(get_task("superglue/cb").labels)
    assert accuracy(rows) == pytest.approx(result["val"]["accuracy"])
    scores = compute(["macro_f1"], [r["prediction"] for r in rows], [r["gold"] for r in rows])
    assert scores["macro_f1"] == pytest.approx(result["val"]["macro_f1"])


def test_multiple_choice_copa(tmp_path):
    result, out = run(tmp_path, "superglue/copa")
    rows = lines(out / "predictions/val.jsonl")
    raw = raw_records(FIXTURES / "superglue/COPA/val.jsonl")
    assert [r["id"] for r in rows] == [rec["idx"] for rec in raw]
    assert [r["gold"] for r in rows] == [rec["label"] for rec in raw]  # the choice index
    assert {r["prediction"] for r in rows} <= {0, 1}
    assert accuracy(rows) == pytest.approx(result["val"]["accuracy"])


def test_ner_tag_lists_on_test(tmp_path):
    """CoNLL-2003 has no val file: its reported split is test; ids are sentence positions."""
    result, out = run(tmp_path, "ner/conll2003")
    assert result["predictions_files"] == {"test": "predictions/test.jsonl"}
    rows = lines(out / "predictions/test.jsonl")
    gold = load_splits(get_task("ner/conll2003"), FIXTURES)[0]["test"]
    assert [r["id"] for r in rows] == list(range(len(gold)))
    assert [r["gold"] for r in rows] == [ex["tags"] for ex in gold]  # IOB2 (the file's IOB1, converted)
    assert all(len(r["prediction"]) == len(r["gold"]) for r in rows)
    scores = compute(["entity_f1"], [r["prediction"] for r in rows], [r["gold"] for r in rows])
    assert scores["entity_f1"] == pytest.approx(result["test"]["entity_f1"])


def test_extractive_qa_answer_strings(tmp_path):
    result, out = run(tmp_path, "qa/squad")
    rows = lines(out / "predictions/val.jsonl")
    val = load_splits(get_task("qa/squad"), FIXTURES)[0]["val"]
    assert [r["id"] for r in rows] == [ex["id"] for ex in val]  # SQuAD's question ids
    assert [r["gold"] for r in rows] == [ex["answers"]["text"] for ex in val]
    assert all(isinstance(r["prediction"], str) for r in rows)
    scores = compute(["squad_em", "squad_f1"], [r["prediction"] for r in rows], [r["gold"] for r in rows])
    assert scores == pytest.approx({k: result["val"][k] for k in ("squad_em", "squad_f1")})


def test_multitask_one_file_per_task(tmp_path):
    result, out = run(tmp_path, "superglue/cb+superglue/copa", batch_size=2)
    assert result["predictions_files"] == {
        "superglue/cb": {"val": "predictions/superglue-cb/val.jsonl"},
        "superglue/copa": {"val": "predictions/superglue-copa/val.jsonl"},
    }
    for task, files in result["predictions_files"].items():
        rows = lines(out / files["val"])
        assert len(rows) == result["tasks"][task]["data"]["sizes"]["val"]
        assert accuracy(rows) == pytest.approx(result["tasks"][task]["val"]["accuracy"])


def test_no_files_without_reported_splits(tmp_path):
    """A search run (``report=False``) scores dev alone: no predictions written."""
    values = {"task": "superglue/cb", "method": "ptuning_v2", "method_args": {"prompt_length": 3},
              "data_dir": str(FIXTURES), "epochs": 1, "batch_size": 4, "seed": 0}
    result = train(make_run_config(values), backbone=tiny_backbone("bert", tmp_path / "model"), output=tmp_path / "out",
                   progress=False, report=False)
    assert "predictions_files" not in result and not (tmp_path / "out/predictions").exists()


def test_multirc_items_carry_their_paragraph(tmp_path):
    """MultiRC: each item's paragraph is its ``cluster`` (what a report's bootstrap resamples
    whole), in the result's per-item inputs and in the predictions file; ``groups`` (the
    questions, which EM needs) stay as they were. Val here is the fixture's train file: two
    paragraphs (idx 0 and 1)."""
    import shutil

    data = tmp_path / "data" / "superglue" / "MultiRC"
    data.mkdir(parents=True)
    for role in ("train", "val"):
        shutil.copy(FIXTURES / "superglue/MultiRC/train.jsonl", data / f"{role}.jsonl")
    result, out = run(tmp_path, "superglue/multirc", data_dir=str(tmp_path / "data"))
    val = load_splits(get_task("superglue/multirc"), tmp_path / "data")[0]["val"]
    stored = json.loads((out / "result.json").read_text())["predictions"]["val"]
    assert sorted(stored["clusters"]) == sorted(ex["passage"] for ex in val) and set(stored["clusters"]) == {"0", "1"}
    assert sorted(stored["groups"]) == sorted(ex["group"] for ex in val)  # (items in evaluation order)
    assert [c for c, g in zip(stored["clusters"], stored["groups"]) if g.split("-")[0] != c] == []  # a question's paragraph
    rows = lines(out / "predictions/val.jsonl")  # (lines in example order)
    assert [r["cluster"] for r in rows] == [ex["passage"] for ex in val] and [r["group"] for r in rows] == [ex["group"] for ex in val]
    assert [r["cluster"] for r in rows] == [r["id"].split("-")[0] for r in rows]  # ids: paragraph-question-answer
    assert compute(["em"], stored["predictions"], stored["references"], stored["groups"])["em"] == pytest.approx(result["val"]["em"])


def test_no_cluster_without_passages(tmp_path):
    result, out = run(tmp_path, "superglue/cb")
    assert "clusters" not in result["predictions"]["val"]
    assert not any("cluster" in r for r in lines(out / "predictions/val.jsonl"))
