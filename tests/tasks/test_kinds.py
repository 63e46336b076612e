"""Task kinds are an ABC: a kind missing a lifecycle method cannot be made, every registered
kind states its facts (label set, truncation, display name) in its own class body and they
load without torch, and the report's label-task check asks the kind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ptcore.tasks import TASKS
from ptcore.tasks.kinds import TRUNCATIONS, Classification, Kind, get_kind, kind_class, kind_registry, register_kind

REPORT_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "with_predictions"

# what the lists these facts replace said: the report's LABEL_KINDS, train.py's TRUNCATING_KINDS
EXPECTED = {  # name: (display name, has a label set, truncation)
    "classification": ("classification", True, "cut"),
    "regression": ("regression", False, "cut"),
    "multiple_choice": ("multiple choice", True, "cut"),
    "token_classification": ("token classification", False, "words"),
    "extractive_qa": ("extractive QA", False, "windows"),
}


class AlmostAKind(Kind):
    """Every lifecycle method but ``loss``."""

    name, display_name, has_label_set, truncation = "almost", "almost", False, "cut"

    def encode(self, examples, tokenizer, max_length):
        return []

    def make_head(self, hidden, spec, dropout):
        return None

    def logits(self, model, batch):
        return None

    def decode(self, logits, batch):
        return []

    def metric_inputs(self, preds, features, examples, spec):
        return None

    def item_examples(self, features, examples):
        return []


def test_a_kind_missing_a_lifecycle_method_cannot_be_made():
    with pytest.raises(TypeError, match="abstract method.*loss"):
        AlmostAKind()
    with pytest.raises(TypeError, match="does not implement loss"):
        register_kind(AlmostAKind)
    with pytest.raises(TypeError):
        Kind()
    assert "almost" not in kind_registry()


def test_a_kind_states_its_facts_itself():
    """A refinement that would inherit its parent's label set is refused at registration."""

    class Ranking(Classification):
        name = "ranking"

    with pytest.raises(TypeError, match="does not state display_name, has_label_set, truncation"):
        register_kind(Ranking)

    class Odd(Classification):
        name, display_name, has_label_set, truncation = "odd", "odd", False, "shrink"

    with pytest.raises(ValueError, match="truncation 'shrink'"):
        register_kind(Odd)
    assert "ranking" not in kind_registry() and "odd" not in kind_registry()


def test_every_registered_kind_answers_its_facts():
    assert set(kind_registry()) == set(EXPECTED)
    for name in kind_registry():
        cls = kind_class(name)
        facts = (cls.display_name, cls.has_label_set, cls.truncation)
        assert facts == EXPECTED[name], name
        assert cls.name == name and cls.truncation in TRUNCATIONS and isinstance(cls.has_label_set, bool)
        kind = get_kind(name)  # complete: no abstract method left
        assert (kind.display_name, kind.has_label_set, kind.truncation) == facts
    assert {spec.kind for _, spec in TASKS.items()} <= set(kind_registry())


def test_unknown_kinds_get_did_you_mean():
    from ptcore.tasks.base import LocalSource, TaskSpec

    with pytest.raises(ValueError, match=r"unknown task kind 'clasification' \(did you mean 'classification'"):
        TaskSpec("x/y", "clasification", LocalSource("x", "jsonl", {}), None)
    with pytest.raises(KeyError, match="did you mean 'extractive_qa'"):
        get_kind("extractive-qa")


def test_kind_facts_load_without_torch():
    """Task declarations (``orchestrate ls tasks``) and the report read the facts; torch loads
    only when a kind's method runs."""
    code = (
        "import sys\n"
        "from ptcore.tasks import TASKS\n"
        "from ptcore.tasks.kinds import kind_class\n"
        "from orchestrator.common.labels import has_label_set\n"
        "facts = [kind_class(s.kind).has_label_set for _, s in TASKS.items()]\n"
        "assert has_label_set('classification') and not has_label_set('extractive_qa')\n"
        "print('torch' in sys.modules)\n"
        "from ptcore.tasks.kinds import pad\n"
        "pad([[1, 2], [3]], 0)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def _cb_ledger(tmp_path: Path) -> Path:
    """The report fixture's CB rows on one backbone (predictions included: fast to build)."""
    out = tmp_path / "study"
    shutil.copytree(REPORT_FIXTURE / "predictions", out / "predictions")
    rows = pd.read_csv(REPORT_FIXTURE / "results.csv", dtype=str, keep_default_na=False)
    rows[(rows.backbone == "MiniLM-L2") & (rows.task == "superglue/cb")].to_csv(out / "results.csv", index=False)
    return out


def test_the_reports_label_task_check_asks_the_kind(tmp_path, monkeypatch):
    from orchestrator.report.build import build_report
    from orchestrator.common.labels import has_label_set
    from orchestrator.report.load import load_results

    study = _cb_ledger(tmp_path)
    rep = build_report(load_results(study), {"versions": {}})
    assert rep.majority["superglue/cb"] is not None and rep.chance["superglue/cb"] is not None

    monkeypatch.setattr(Classification, "has_label_set", False)  # CB's kind now says: no label set
    assert not has_label_set("classification")
    rep = build_report(load_results(study), {"versions": {}})
    assert rep.majority["superglue/cb"] is None and rep.chance["superglue/cb"] is None
    assert rep.reference_why["superglue/cb"] == "not a label task"
