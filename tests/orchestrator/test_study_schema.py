"""Study files: schema and registry validation (one-line errors naming file + key path),
the plan, ``orchestrate validate`` / ``study --dry-run`` on the shipped studies, ``ui``."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import yaml

from orch_study_helpers import FIXTURE_DATA, REPO, write_study
from orchestrator.cli.app import main
from orchestrator.study import StudyError, load_study, parse_study
from ptcore.methods import METHODS

SHIPPED = [REPO / "studies" / "scale_sweep.yaml", REPO / "studies" / "scale_sweep_cluster.yaml",
           REPO / "studies" / "scale_sweep_cluster_generative.yaml", REPO / "studies" / "dynamic_claim.yaml",
           REPO / "studies" / "dynamic_claim_cluster.yaml"]

BASE = {
    "name": "mini",
    "backbones": [{"id": "sentence-transformers/all-MiniLM-L6-v2", "layers": 2}],
    "tasks": ["superglue/cb"],
    "methods": [{"name": "ptuning_v2", "fixed": {"prompt_length": 8}, "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}}],
    "train": {"epochs": 2},
}


def err(tmp_path: Path, mutate) -> str:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    path = write_study(tmp_path / "x.yaml", raw)
    with pytest.raises(StudyError) as e:
        load_study(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    return msg[len(f"{path}: ") :]


def test_valid_minimal_study_and_cells(tmp_path):
    ls = load_study(write_study(tmp_path / "x.yaml", BASE), cwd=tmp_path)
    assert [c.id for c in ls.cells()] == ["all-MiniLM-L6-v2-L2__superglue-cb__ptuning_v2"]
    assert ls.output_dir == tmp_path / "studies_out" / "mini"
    assert ls.mlflow_uri == f"sqlite:///{tmp_path / 'studies_out' / 'mini' / 'mlflow.db'}"
    plan = ls.plan()
    assert (plan["cells"], plan["search_trials"], plan["final_runs"], plan["final_trials"]) == (1, 2, 3, 1)


def test_final_runs_packed_by_backbone():
    from dataclasses import dataclass

    from orchestrator.study import pack_runs

    @dataclass
    class B:
        layers: int

    @dataclass
    class C:
        id: str
        model: str
        backbone: B

    @dataclass
    class J:
        cell: C
        runs: list

    l2a, l2b, l4 = C("a", "m", B(2)), C("b", "m", B(2)), C("c", "m", B(4))
    jobs = [J(l2a, [0, 1, 2]), J(l4, [0, 1, 2]), J(l2b, [0, 1, 2])]
    shape = lambda packs: [[(j.cell.id, j.runs) for j in p] for p in packs]  # noqa: E731
    assert shape(pack_runs(jobs, None)) == [[("a", [0, 1, 2])], [("c", [0, 1, 2])], [("b", [0, 1, 2])]]
    # one backbone per trial; a cell's seeds straddle two trials when the pack is full
    assert shape(pack_runs(jobs, 4)) == [[("a", [0, 1, 2]), ("b", [0])], [("b", [1, 2])], [("c", [0, 1, 2])]]
    assert shape(pack_runs(jobs, 1)) == [[(c, [s])] for c in "abc" for s in range(3)]  # L2 cells a, b first
    assert sorted((j.cell.id, r) for p in pack_runs(jobs, 5) for j in p for r in j.runs) == sorted((j.cell.id, r) for j in jobs for r in j.runs)


def test_unknown_key_names_path_and_suggests(tmp_path):
    assert err(tmp_path, lambda r: r["methods"][0].update(serach={})).startswith("methods.0.serach: unknown key 'serach'; did you mean 'search'?")
    assert err(tmp_path, lambda r: r.update(budgett={})).startswith("budgett: unknown key 'budgett'; did you mean 'budget'?")
    assert err(tmp_path, lambda r: r.update(budget={"trials": 3})).startswith("budget.trials: unknown key 'trials'; did you mean 'trials_per_cell'?")
    msg = err(tmp_path, lambda r: r["methods"][0]["search"]["lr"].update(lo=1))
    assert msg.startswith("methods.0.search.lr.lo: unknown key 'lo'")


def test_bad_search_key(tmp_path):
    msg = err(tmp_path, lambda r: r["methods"][0]["search"].update(lrr={"type": "float", "low": 0.1, "high": 0.2}))
    assert msg.startswith("methods.0.search.lrr: unknown key for method 'ptuning_v2'; did you mean 'lr'?")
    # an option of another method is not valid here
    msg = err(tmp_path, lambda r: r["methods"][0]["search"].update(tau0={"type": "float", "low": 0.5, "high": 1.0}))
    assert msg.startswith("methods.0.search.tau0: unknown key for method 'ptuning_v2'")
    # cell-level keys are not searchable
    assert err(tmp_path, lambda r: r["methods"][0]["fixed"].update(task="superglue/rte")).startswith("methods.0.fixed.task: unknown key")


def test_bad_search_ranges(tmp_path):
    assert "needs low > 0" in err(tmp_path, lambda r: r["methods"][0]["search"]["lr"].update(low=0.0))
    assert err(tmp_path, lambda r: r["methods"][0]["search"]["lr"].update(low=0.1, high=0.01)).startswith("methods.0.search.lr: low (0.1) must not exceed high")
    assert err(tmp_path, lambda r: r["methods"][0]["search"].update(depth={"type": "choice"})).startswith("methods.0.search.depth: type 'choice' needs")
    # the ends of a range are built into real run configs: prefix_hidden_size must be >= 1
    msg = err(tmp_path, lambda r: r["methods"][0]["search"].update(prefix_hidden_size={"type": "int", "low": 0, "high": 8}))
    assert msg.startswith("methods.0.search.prefix_hidden_size: value 0:")
    assert "also set in methods.0.fixed" in err(tmp_path, lambda r: r["methods"][0]["search"].update(prompt_length={"type": "int", "low": 4, "high": 8}))


def test_bad_fixed_and_train_values(tmp_path):
    assert err(tmp_path, lambda r: r["methods"][0]["fixed"].update(reparameterize="maybe")).startswith("methods.0.fixed.reparameterize:")
    assert err(tmp_path, lambda r: r["train"].update(epochs=0)).startswith("train.epochs:")
    assert err(tmp_path, lambda r: r["train"].update(epoch=3)).startswith("train.epoch: unknown run setting; did you mean 'epochs'?")
    assert err(tmp_path, lambda r: r["train"].update(data_dir="x")).startswith("train.data_dir: set once for the study")


def test_unknown_task_and_method_did_you_mean(tmp_path):
    msg = err(tmp_path, lambda r: r.update(tasks=["superglue/cbb"]))
    assert msg.startswith("tasks.0: unknown task 'superglue/cbb'") and "did you mean" in msg and "'superglue/cb'" in msg
    msg = err(tmp_path, lambda r: r["methods"][0].update(name="ptuning"))
    assert msg.startswith("methods.0.name: unknown method 'ptuning'") and "'ptuning_v2'" in msg


def test_structure_errors(tmp_path):
    assert err(tmp_path, lambda r: r.pop("tasks")).startswith("tasks: required key is missing")
    assert err(tmp_path, lambda r: r.update(tasks=[])).startswith("tasks:")
    assert err(tmp_path, lambda r: r.update(resources={"workers_per_trial": 0})).startswith("resources.workers_per_trial:")
    assert err(tmp_path, lambda r: r.update(final={"seeds": [0, 0]})).startswith("final.seeds: seeds must be distinct")
    assert err(tmp_path, lambda r: r.update(name="a b")).startswith("name:")
    two = lambda r: r["methods"].append(copy.deepcopy(r["methods"][0]))  # noqa: E731
    assert err(tmp_path, two).startswith("methods.1: method 'ptuning_v2' is listed twice")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntasks: [a, b\n")
    with pytest.raises(StudyError, match=rf"^{path}: line \d+: invalid YAML"):
        load_study(path)
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "missing.yaml")


def test_data_dir_relative_to_study_file_then_env(tmp_path, monkeypatch):
    sub = tmp_path / "studies"
    sub.mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.delenv("PTCORE_DATA_DIR", raising=False)
    ls = load_study(write_study(sub / "x.yaml", {**BASE, "data_dir": "../data"}))
    assert ls.data_dir == str((tmp_path / "data").resolve())
    ls = load_study(write_study(sub / "y.yaml", BASE))
    assert ls.data_dir is None and "hub" in ls.data_source
    monkeypatch.setenv("PTCORE_DATA_DIR", str(FIXTURE_DATA))
    ls = load_study(sub / "y.yaml")
    assert ls.data_dir == str(FIXTURE_DATA.resolve()) and ls.data_source == "$PTCORE_DATA_DIR"
    # a run's raw config carries the resolved data dir to the workers
    from orchestrator.study import compose_run

    cell = ls.cells()[0]
    run = compose_run(ls, cell, {"lr": 0.01, "prompt_length": 4}, seed=3)
    assert run["data_dir"] == ls.data_dir and run["seed"] == 3 and run["lr"] == 0.01
    assert run["method_args"] == {"prompt_length": 4} and run["layers"] == 2
    with pytest.raises(StudyError, match=r"data_dir: .* does not exist"):
        load_study(write_study(sub / "z.yaml", {**BASE, "data_dir": "../nope"}))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_studies_validate_and_dry_run(path, capsys, monkeypatch, tmp_path):
    raw = yaml.safe_load(path.read_text())
    if any(m["name"] not in METHODS for m in raw["methods"]):  # a method still being added: check the rest
        raw["methods"] = [m for m in raw["methods"] if m["name"] in METHODS]
        path = write_study(tmp_path / path.name, raw)  # the shipped studies use no relative paths
    study = parse_study(raw, path)
    monkeypatch.setenv("PTCORE_DATA_DIR", str(FIXTURE_DATA))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(path)]) == 0
    assert f"ok: {path}" in capsys.readouterr().out
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    n = sum(1 for b in study.backbones for m in study.methods if m.runs_on(b)) * len(study.tasks) * max(1, len(raw.get("regimes") or []))
    assert f"cells        {n} = " in out
    assert f"seeds {study.final.seeds}" in out
    assert "resources" in out and "output" in out and "tracking" in out
    assert not (tmp_path / "studies_out").exists()  # a dry run starts nothing and writes nothing


def test_scale_sweep_shape():
    raw = yaml.safe_load(SHIPPED[0].read_text())
    assert "data_dir" not in raw  # comes from PTCORE_DATA_DIR
    assert [b["layers"] for b in raw["backbones"]] == [2, 4, 6]
    assert raw["tasks"] == ["glue/sst2", "superglue/cb"]
    methods = {m["name"]: m for m in raw["methods"]}
    assert set(methods) == {"finetune", "lora", "prompt_tuning", "ptuning_v2", "dynamic"}
    assert methods["lora"]["backbones"] == ["MiniLM-L6"] and "r" in methods["lora"]["search"]  # the PEFT baseline row
    # the knobs the tool exists to search, with ASHA stopping poor trials
    assert {"lr", "prompt_length", "depth"} <= set(methods["ptuning_v2"]["search"])
    assert {"lr", "tau0"} <= set(methods["dynamic"]["search"]) and "prompt_length" in methods["prompt_tuning"]["search"]
    assert methods["dynamic"]["fixed"]["position"] == "instance"  # something dynamic
    assert raw["budget"]["grace_period"] < raw["train"]["epochs"]
    assert "max_eval_examples" not in raw["train"]  # official validation sets stay whole
    assert raw["final"]["seeds"] == [0, 1, 2]


def test_validate_cli_error_is_one_line(tmp_path, capsys):
    raw = copy.deepcopy(BASE)
    raw["methods"][0]["search"]["lrr"] = {"type": "float", "low": 0.1, "high": 0.2}
    path = write_study(tmp_path / "x.yaml", raw)
    assert main(["validate", str(path)]) == 2
    err_out = capsys.readouterr().err.strip()
    assert err_out.startswith(f"error: {path}: methods.0.search.lrr:") and "\n" not in err_out


def test_ui_resolves_the_study_store(tmp_path, monkeypatch):
    from orchestrator.cli.ui import tracking_uri_for, ui_command

    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path / "x.yaml", BASE)
    uri = tracking_uri_for(str(path))
    assert uri == f"sqlite:///{tmp_path / 'studies_out' / 'mini' / 'mlflow.db'}"
    (tmp_path / "studies_out" / "mini").mkdir(parents=True)
    (tmp_path / "studies_out" / "mini" / "mlflow.db").write_bytes(b"")
    assert tracking_uri_for(str(tmp_path / "studies_out" / "mini")) == uri
    assert tracking_uri_for(None) == uri  # the only study under studies_out/
    cmd = ui_command(uri, "127.0.0.1", 5000)
    assert cmd[1:4] == ["-m", "mlflow", "ui"] and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    calls = []  # no real server: orchestrate ui's process handling is tested in test_processes.py
    monkeypatch.setattr("orchestrator.cli.ui.run_process_tree", lambda c, **kw: calls.append(c) or (0, None))
    with socket.socket() as s:  # a port free now (the UI checks it before starting)
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    assert main(["ui", str(path), "--port", port]) == 0
    assert calls and calls[0][calls[0].index("--port") + 1] == port and calls[0][calls[0].index("--host") + 1] == "127.0.0.1"


def test_output_dir_of_another_study_is_refused(tmp_path):
    from orchestrator.execution.runner import StudyRunner

    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text('{"name": "other", "invocations": []}')
    ls = load_study(write_study(tmp_path / "x.yaml", {**BASE, "output_dir": str(out)}))
    with pytest.raises(StudyError, match="holds study 'other', not 'mini'"):
        StudyRunner(ls).run()


def test_a_method_can_be_limited_to_some_backbones(tmp_path):
    """``methods[].backbones``: the method's cells exist only on those backbones (by label or
    id); a name that is no backbone of the study is refused with the labels to use."""
    from orchestrator.cli.study import plan_lines
    from orchestrator.study import StudyError, load_study

    raw = {
        "name": "lim", "output_dir": str(tmp_path / "out"), "data_dir": str(FIXTURE_DATA), "tasks": ["superglue/cb"],
        "backbones": [{"id": "bert-base-uncased", "layers": 2, "label": "a"}, {"id": "roberta-base", "layers": 2, "label": "b"}],
        "methods": [{"name": "finetune"}, {"name": "ptuning_v2", "backbones": ["a"]}],
    }  # fmt: skip
    ls = load_study(raw=raw, cwd=tmp_path)
    assert [c.id for c in ls.cells()] == ["a__superglue-cb__finetune", "a__superglue-cb__ptuning_v2", "b__superglue-cb__finetune"]
    assert any("3 = 2 backbone(s) x 1 task(s) x 2 method(s), less the excluded (ptuning_v2 on a only)" in line for line in plan_lines(ls))
    raw["methods"][1]["backbones"] = ["c"]
    with pytest.raises(StudyError, match=r"methods\.1\.backbones\.0: no backbone 'c' in this study; .*use a label or id of backbones: a, b"):
        load_study(raw=raw, cwd=tmp_path)


def test_generative_smoke_study_validates_on_the_tiny_checkpoints_it_names(capsys, monkeypatch, tmp_path):
    """studies/generative_smoke.yaml names tiny checkpoints by relative path; written where its
    header says (python -m ptcore.tiny), the study validates and dry-runs: 2 backbones x 4 methods."""
    from ptcore.tiny import write_tiny_model

    (tmp_path / "studies").mkdir()
    study = tmp_path / "studies" / "generative_smoke.yaml"
    study.write_text((REPO / "studies" / "generative_smoke.yaml").read_text())
    for family in ("t5", "llama"):
        write_tiny_model(tmp_path / "studies_out" / "tiny" / family, family)
    monkeypatch.setenv("PTCORE_DATA_DIR", str(FIXTURE_DATA))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 0
    assert "8 cells" in capsys.readouterr().out
    assert main(["study", str(study), "--dry-run"]) == 0


@pytest.mark.parametrize("name", ["dynamic_claim.yaml", "dynamic_claim_cluster.yaml"])
def test_the_dynamic_claim_studies_compare_dp_and_prompt_tuning_at_the_same_budget(name, monkeypatch, tmp_path):
    """The DP claim is DP against a fixed prompt of the same budget: in every cell pair the two runs
    share every run setting and the prompt (length, init), and differ in the choice alone; the
    report's one contrast is that pair."""
    from ptcore.config import make_run_config
    from orchestrator.study.load import load_study
    from orchestrator.study.plan import compose_run

    monkeypatch.setenv("PTCORE_DATA_DIR", str(FIXTURE_DATA))
    monkeypatch.chdir(tmp_path)
    ls = load_study(REPO / "studies" / name)
    assert [list(c) for c in ls.study.report.contrasts] == [["dynamic", "prompt_tuning"]]
    pairs: dict = {}
    for cell in ls.cells():
        if cell.method.name in ("dynamic", "prompt_tuning"):
            key = (cell.model, cell.task, getattr(cell, "regime", None) and cell.regime.name)
            pairs.setdefault(key, {})[cell.method.name] = make_run_config(compose_run(ls, cell, seed=0)).resolved()
    assert pairs and all(set(p) == {"dynamic", "prompt_tuning"} for p in pairs.values())
    for p in pairs.values():
        dp, pt = p["dynamic"], p["prompt_tuning"]
        assert {k: v for k, v in dp.items() if k not in ("method", "method_args")} == \
               {k: v for k, v in pt.items() if k not in ("method", "method_args")}
        assert dp["method_args"]["base"] == "shallow" and dp["method_args"]["position"] == "instance"
        for option in ("prompt_length", "init"):
            assert dp["method_args"][option] == pt["method_args"][option]
