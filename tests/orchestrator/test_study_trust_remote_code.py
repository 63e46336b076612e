"""trust_remote_code stays off unless a study sets it on a backbone: the study's runs carry it
only then, and the trial process loads the backbone with exactly that setting."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from orch_study_helpers import FIXTURE_DATA, write_study
from orchestrator.study import StudyError, compose_run, load_study
from ptcore.config import make_run_config

BASE = {
    "name": "trust",
    "backbones": [{"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2}],
    "tasks": ["superglue/cb"],
    "methods": [{"name": "ptuning_v2", "fixed": {"prompt_length": 8}, "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}}],
    "train": {"epochs": 2},
    "data_dir": str(FIXTURE_DATA),
}


def _runs(tmp_path: Path, raw: dict) -> dict[str, bool]:
    ls = load_study(write_study(tmp_path / "x.yaml", raw))
    return {c.backbone.display(): make_run_config(compose_run(ls, c, {"lr": 0.01}, seed=0)).trust_remote_code for c in ls.cells()}


def test_off_by_default_on_only_for_the_backbone_that_sets_it(tmp_path):
    assert _runs(tmp_path, BASE) == {"all-MiniLM-L6-v2-L2": False}
    raw = copy.deepcopy(BASE)
    raw["backbones"] = [
        {"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2},
        {"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 1, "trust_remote_code": True},
        {"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 3, "trust_remote_code": False},
    ]
    assert _runs(tmp_path, raw) == {"all-MiniLM-L6-v2-L2": False, "all-MiniLM-L6-v2-L1": True, "all-MiniLM-L6-v2-L3": False}


@pytest.mark.parametrize("where", ["train", "fixed"])
def test_only_a_backbone_sets_it(tmp_path, where):
    raw = copy.deepcopy(BASE)
    (raw["train"] if where == "train" else raw["methods"][0]["fixed"])["trust_remote_code"] = True
    with pytest.raises(StudyError, match="trust_remote_code"):
        load_study(write_study(tmp_path / "x.yaml", raw))


def test_trial_process_loads_with_the_runs_setting(monkeypatch):
    import ptcore.backbones

    from orchestrator.execution.worker import ProcessCache

    calls = []
    monkeypatch.setattr(ptcore.backbones, "load_backbone", lambda model, layers, **kw: calls.append(kw) or object())
    cache = ProcessCache()
    cache.backbone("m", 2)
    cache.backbone("m", 2, True)
    assert calls == [{"trust_remote_code": False}, {"trust_remote_code": True}]  # two entries: never shared
