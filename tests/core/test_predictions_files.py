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
