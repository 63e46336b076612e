"""Presets (ptcore.presets): ``preset: dpt`` fills in the Dynamic Prompting reference code's
settings wherever a run does not give them, on every path that builds a run (make_run_config,
``orchestrate run``, a study's cells, a replayed config), and the README's table of them is
the preset, row for row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURES

from ptcore.config import RunConfig, make_run_config, parse_value, run_fields, set_spelling
from ptcore.errors import ConfigError
from ptcore.methods import METHODS, method_fields
from ptcore.presets import PRESETS, get_preset, register_preset, unregister_preset
from ptcore.tasks import get_task

REPO = Path(__file__).resolve().parents[2]
DPT = get_preset("dpt")
# what the reference is: the DP authors' OpenPrompt fork, and upstream OpenPrompt's template files
REFERENCE_FILES = (
    "tutorial/adap_ins_pos_main.py",
    "openprompt/prompts/soft_ins_pos_adaptive.py",
    "scripts/SuperGLUE/CB/soft_template.txt",
    "scripts/SuperGLUE/CB/manual_verbalizer.txt",
    "scripts/SuperGLUE/RTE/soft_template.txt",
    "scripts/SuperGLUE/RTE/manual_verbalizer.txt",
)
DP_ONLY = ("position", "estimator", "selector", "tau0", "tau_min", "anneal", "anneal_rate", "length", "pool_size", "base")
RUN_SETTINGS = {"optimizer": "adafactor", "lr": 0.3, "lr_schedule": "constant", "warmup_steps": 500, "weight_decay": 0.0,
                "max_grad_norm": 1.0, "batch_size": 32, "grad_accum_steps": 4, "max_length": 480, "format": "text",
                "model": "google/t5-large-lm-adapt"}  # fmt: skip


# ====================================================================== the README is the preset


def readme_section() -> str:
    readme = (REPO / "README.md").read_text()
    assert "### The `dpt` preset" in readme, "README has no section 'The `dpt` preset'"
    return re.split(r"\n#{2,3} ", readme.split("### The `dpt` preset", 1)[1], maxsplit=1)[0]


def readme_rows() -> dict[str, tuple[str, str]]:
    """key -> (value cell, reference cell) of the section's `| setting | preset | reference |`
    table; a task's rows are keyed ``<task> template`` / ``<task> verbalizer`` (as ``sources``)."""
    section = readme_section()
    assert "| setting | preset | reference |" in section
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"a row of three cells (no '|' inside one): {line}"
        name, value, ref = cells
        m = re.fullmatch(r"`([^`]+)`(?: (template|verbalizer))?", name)
        assert m, f"first cell: `setting`, or `task` template / verbalizer: {name!r}"
        key = m.group(1) if m.group(2) is None else f"{m.group(1)} {m.group(2)}"
        assert key not in rows, f"{key!r} has two rows"
        rows[key] = (value, ref)
    return rows


def preset_values(preset) -> dict:
    values = dict(preset.settings)
    values.update({f"{task} {k}": v for task, fmt in preset.tasks.items() for k, v in fmt.items()})
    return values


def test_the_readme_table_is_the_preset_row_for_row():
    """One row per setting and per task's template / label words, none else; each value spelled
    as --set spells it (and read back as --set reads it, the same value); each reference cell
    is the preset's source for that key and names a file of the reference."""
    rows, want = readme_rows(), preset_values(DPT)
    assert set(rows) - set(want) == set(), f"README rows for settings the preset lacks: {sorted(set(rows) - set(want))}"
    assert set(want) - set(rows) == set(), f"preset settings without a README row: {sorted(set(want) - set(rows))}"
    for key, (value, ref) in rows.items():
        assert value == f"`{set_spelling(want[key])}`", f"{key}: README says {value}, the preset {set_spelling(want[key])}"
        expected = list(want[key]) if isinstance(want[key], tuple) else want[key]
        assert parse_value(value.strip("`")) == expected, key
        assert ref == DPT.sources[key], f"{key}: the README's reference cell is not the preset's source"
        assert any(f in ref for f in REFERENCE_FILES), f"{key}: its reference names none of {REFERENCE_FILES}"


def test_every_note_is_in_the_readme_word_for_word():
    section = readme_section()
    assert DPT.notes
    for note in DPT.notes:
        assert f"* {note}" in section, f"README misses a note of the dpt preset: {note}"
        assert "\n" not in note


def test_every_preset_names_real_settings_and_task_formats():
    """Each setting is a run setting or an option of the preset's method, and each task's
    template and label words are valid for it (a run of each builds)."""
    assert "dpt" in PRESETS.names()
    for name, preset in PRESETS.items():
        method = preset.settings.get("method", RunConfig.model_fields["method"].default)
        unknown = set(preset.settings) - run_fields() - method_fields(method)
        assert not unknown, f"preset {name!r}: no such setting {sorted(unknown)}"
        assert set(preset.sources) == set(preset_values(preset)), name
        for task, fmt in preset.tasks.items():
            cfg = make_run_config({"task": task, "preset": name})
            assert (cfg.template, cfg.verbalizer) == (fmt["template"], fmt["verbalizer"])
            assert len(fmt["verbalizer"]) == len(get_task(task).labels)


def test_the_dpt_task_formats_follow_the_reference_files():
    """OpenPrompt's CB / RTE soft template, choice 0: premise is text_a and hypothesis text_b in
    ptcore's CB and RTE; label words in ptcore's label order (entailment first)."""
    for task in ("superglue/cb", "superglue/rte"):
        assert get_task(task).text_fields == ("premise", "hypothesis")
        assert get_task(task).labels[0] == "entailment"
    assert get_task("superglue/cb").labels == ("entailment", "contradiction", "neutral")
    assert get_task("superglue/rte").labels == ("entailment", "not_entailment")
    assert DPT.tasks["superglue/cb"]["verbalizer"] == ("yes", "no", "maybe")
    assert DPT.tasks["superglue/rte"]["verbalizer"] == ("yes", "no")
    from ptcore.config import run_spec
    from ptcore.tasks.templates import render_input

    example = {"text_a": "A dog sleeps", "text_b": "An animal rests"}
    cb = make_run_config({"task": "superglue/cb", "preset": "dpt"})
    assert render_input(run_spec(cb, "superglue/cb"), example) == "hypothesis: An animal rests. premise: A dog sleeps"
    rte = make_run_config({"task": "superglue/rte", "preset": "dpt"})
    assert render_input(run_spec(rte, "superglue/rte"), example) == "sentence1: A dog sleeps sentence2: An animal rests"


# ====================================================================== expansion


def test_the_preset_fills_in_what_the_run_does_not_give():
    cfg = make_run_config({"task": "superglue/cb", "preset": "dpt"})
    assert cfg.preset == "dpt" and cfg.method == "dynamic"
    assert {k: getattr(cfg, k) for k in RUN_SETTINGS} == RUN_SETTINGS
    assert cfg.template == "hypothesis: {text_b}. premise: {text_a}" and cfg.verbalizer == ("yes", "no", "maybe")
    opts = cfg.method_args.model_dump()
    assert {k: opts[k] for k in DPT.settings if k in opts} == {k: v for k, v in DPT.settings.items() if k not in run_fields()}
    assert (opts["selector"], opts["prompt_length"], opts["init"], opts["anneal_rate"]) == ("linear_relu", 20, "vocab_first", 3e-6)
    assert cfg.epochs == RunConfig.model_fields["epochs"].default  # left to the run
    # without the preset: the defaults
    plain = make_run_config({"task": "superglue/cb"})
    assert (plain.method, plain.optimizer, plain.lr, plain.template, plain.preset) == ("ptuning_v2", "adamw", None, None, None)


@pytest.mark.parametrize("given", [
    {"lr": 0.1}, {"model": "t5-small"}, {"batch_size": 8}, {"weight_decay": 0.01}, {"format": "auto"},
    {"epochs": 3}, {"method_args": {"prompt_length": 10}}, {"method_args": {"tau_min": 0.1, "anneal": "exponential"}},
    {"warmup_steps": 0}, {"template": "premise: {text_a} hypothesis: {text_b}"}, {"verbalizer": ["a", "b", "c"]},
])  # fmt: skip
def test_an_explicit_setting_wins_over_the_preset(given):
    cfg = make_run_config({"task": "superglue/cb", "preset": "dpt", **given})
    dumped = cfg.model_dump()
    for key, value in given.items():
        if key == "method_args":
            assert {k: dumped["method_args"][k] for k in value} == value
        else:
            assert dumped[key] == (tuple(value) if isinstance(value, list) else value), key
    # the rest is still the preset's
    assert cfg.optimizer == "adafactor" and cfg.method_args.selector == "linear_relu"
    if "template" in given or "verbalizer" in given:  # the other one is not the preset's either
        assert cfg.template != DPT.tasks["superglue/cb"]["template"] and cfg.verbalizer != DPT.tasks["superglue/cb"]["verbalizer"]


def test_a_given_warmup_ratio_keeps_the_presets_warmup_steps_out():
    """warmup_steps replaces warmup_ratio, and both are refused: a run that gives warmup_ratio
    chose it, so the preset's warmup_steps stays out."""
    cfg = make_run_config({"task": "superglue/cb", "preset": "dpt", "warmup_ratio": 0.1})
    assert (cfg.warmup_ratio, cfg.warmup_steps, cfg.lr_schedule) == (0.1, None, "constant")


def test_another_method_gets_only_the_options_it_has():
    """method: prompt_tuning with dpt is the same-budget prompt-tuning baseline: the run
    settings, its prompt length and init, none of dynamic prompting's options, no error."""
    cfg = make_run_config({"task": "superglue/cb", "preset": "dpt", "method": "prompt_tuning"})
    assert cfg.method == "prompt_tuning"
    assert cfg.method_args.model_dump() == {"prompt_length": 20, "init": "vocab_first"}
    assert {k: getattr(cfg, k) for k in RUN_SETTINGS} == RUN_SETTINGS
    assert cfg.template == DPT.tasks["superglue/cb"]["template"]
    for method in METHODS.names():  # every method takes the preset
        cfg = make_run_config({"task": "superglue/cb", "preset": "dpt", "method": method})
        assert set(cfg.method_args.model_dump()) & set(DP_ONLY) <= method_fields(method)
        assert cfg.optimizer == "adafactor"
    ft = make_run_config({"task": "superglue/cb", "preset": "dpt", "method": "finetune"})
    assert ft.method_args.model_dump() == {}


def test_a_task_outside_the_table_keeps_its_declared_format():
    for task in ("superglue/wic", "superglue/boolq", "glue/sst2"):
        cfg = make_run_config({"task": task, "preset": "dpt"})
        assert (cfg.template, cfg.verbalizer) == (None, None) and cfg.lr == 0.3
    multi = make_run_config({"task": "superglue/cb+superglue/rte", "preset": "dpt"})  # one override cannot serve two tasks
    assert (multi.template, multi.verbalizer) == (None, None) and multi.optimizer == "adafactor"
    head = make_run_config({"task": "superglue/cb", "preset": "dpt", "format": "head"})  # no text: no template
    assert (head.template, head.verbalizer) == (None, None)
    upper = make_run_config({"task": "SuperGLUE/CB", "preset": "dpt"})  # task names are case-insensitive
    assert upper.template == DPT.tasks["superglue/cb"]["template"]


def test_an_unknown_preset_is_one_line_with_a_suggestion():
    with pytest.raises(ConfigError) as e:
        make_run_config({"task": "superglue/cb", "preset": "dtp"})
    msg = str(e.value)
    assert msg.startswith("unknown preset 'dtp'") and "did you mean 'dpt'" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("nope")


def test_replaying_a_resolved_config_changes_nothing():
    """result.json's config (resolved) and run_config.json (model_dump) hold every setting: the
    preset has nothing left to fill in, so the replay is the same run with the same hash, even
    when the preset would say otherwise now."""
    for values in ({"task": "superglue/cb", "preset": "dpt"}, {"task": "superglue/cb", "preset": "dpt", "lr": 0.1, "seed": 3},
                   {"task": "superglue/rte", "preset": "dpt", "method": "prompt_tuning", "method_args": {"prompt_length": 5}}):
        cfg = make_run_config(values)
        for replay in (cfg.resolved(), cfg.model_dump(), json.loads(json.dumps(cfg.resolved()))):
            again = make_run_config(replay)
            assert again == cfg and again.config_hash() == cfg.config_hash()
            assert RunConfig(**replay) == cfg
    # a replayed preset run whose file gives an option the preset now differs on keeps the file's
    dumped = make_run_config({"task": "superglue/cb", "preset": "dpt"}).resolved()
    dumped["method_args"]["tau_min"] = 0.2
    assert make_run_config(dumped).method_args.tau_min == 0.2


def test_the_preset_is_not_hashed_its_settings_are():
    """A run with preset=dpt and the same run with the preset's settings spelled out are one run:
    their resolved configs differ by the `preset` key alone, their hashes not at all; the preset
    moves the hash only as its settings do, and runs without one keep their hashes."""
    with_preset = make_run_config({"task": "superglue/cb", "preset": "dpt"})
    spelled = dict(with_preset.resolved())
    spelled.pop("preset")
    explicit = make_run_config(spelled)
    a, b = with_preset.resolved(), explicit.resolved()
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"preset"}
    assert with_preset.config_hash() == explicit.config_hash()
    assert with_preset.config_hash() != make_run_config({"task": "superglue/cb"}).config_hash()
    assert make_run_config({"task": "superglue/cb", "preset": "dpt", "lr": 0.1}).config_hash() != with_preset.config_hash()
    # a run without a preset hashes as before the field existed (tests/core/test_config.py)
    base = {"task": "superglue/cb", "method": "ptuning_v2", "method_args": {"prompt_length": 4}}
    assert make_run_config(base).config_hash() == "4dbf7c734425"
    assert make_run_config({**base, "preset": None}).config_hash() == "4dbf7c734425"


def test_a_registered_preset_works_for_any_method_and_leaves_on_unregister():
    """register_preset / unregister_preset: a preset without a method sets the default method's
    options; what it does not name stays at its default."""
    register_preset("tiny_test", description="a test's", settings={"lr": 0.05, "prompt_length": 3, "epochs": 2},
                    tasks={"glue/sst2": {"verbalizer": ("bad", "good")}})
    try:
        cfg = make_run_config({"task": "glue/sst2", "preset": "tiny_test"})
        assert (cfg.method, cfg.lr, cfg.epochs, cfg.method_args.prompt_length) == ("ptuning_v2", 0.05, 2, 3)
        assert (cfg.template, cfg.verbalizer) == (None, ("bad", "good"))
        with pytest.raises(ValueError, match="registered twice"):
            register_preset("tiny_test", description="again", settings={})
    finally:
        unregister_preset("tiny_test")
    with pytest.raises(ConfigError, match="unknown preset 'tiny_test'"):
        make_run_config({"task": "glue/sst2", "preset": "tiny_test"})
    with pytest.raises(ValueError, match="no source for"):
        register_preset("half_sourced", description="x", settings={"lr": 0.1, "epochs": 2}, sources={"lr": "here"})
    assert "half_sourced" not in PRESETS


# ====================================================================== orchestrate run


def run_args(*argv: str):
    from orchestrator.cli.app import build_parser
    from orchestrator.cli.run import run_config_from_args

    return run_config_from_args(build_parser().parse_args(["run", *argv]))


def test_orchestrate_run_set_preset_builds_the_presets_run():
    """--set preset=dpt with no --method: the preset's method (no default method given in its
    place), and only the flags given outrank the preset; --set may name the preset's method's
    options, before or after --set preset."""
    cfg = run_args("--task", "superglue/cb", "--set", "preset=dpt")
    assert cfg.method == "dynamic" and {k: getattr(cfg, k) for k in RUN_SETTINGS} == RUN_SETTINGS
    assert cfg == make_run_config({"task": "superglue/cb", "preset": "dpt"})
    cfg = run_args("--task", "superglue/cb", "--set", "tau0=0.8", "--set", "preset=dpt", "--epochs", "3", "--seed", "2",
                   "--model", "t5-small", "--set", "lr=0.1", "--set", "batch_size=8")
    assert (cfg.method_args.tau0, cfg.epochs, cfg.seed, cfg.model, cfg.lr, cfg.batch_size) == (0.8, 3, 2, "t5-small", 0.1, 8)
    assert cfg.optimizer == "adafactor" and cfg.method_args.tau_min == 0.5
    pt = run_args("--task", "superglue/rte", "--method", "prompt_tuning", "--set", "preset=dpt")
    assert pt.method_args.model_dump() == {"prompt_length": 20, "init": "vocab_first"} and pt.lr == 0.3
    assert pt.verbalizer == ("yes", "no")
    # a DP option for prompt tuning is still refused, naming the method
    with pytest.raises(ConfigError, match="unknown setting for method 'prompt_tuning'"):
        run_args("--task", "superglue/cb", "--method", "prompt_tuning", "--set", "preset=dpt", "--set", "selector=linear")
    # without a preset nothing changed: ptuning_v2 and its options
    assert run_args("--task", "superglue/cb", "--set", "prompt_length=4").method == "ptuning_v2"
    with pytest.raises(ConfigError, match="unknown setting for method 'ptuning_v2'"):
        run_args("--task", "superglue/cb", "--set", "tau0=0.8")


def test_orchestrate_run_replays_a_preset_run_and_refuses_an_unknown_preset(tmp_path, capsys):
    from orchestrator.cli.app import main

    cfg = run_args("--task", "superglue/cb", "--set", "preset=dpt", "--set", "lr=0.1")
    (tmp_path / "result.json").write_text(json.dumps({"config": cfg.resolved()}))
    again = run_args("--config", str(tmp_path / "result.json"))
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert run_args("--config", str(tmp_path / "result.json"), "--set", "tau0=0.7").method_args.tau0 == 0.7
    assert main(["run", "--task", "superglue/cb", "--set", "preset=dtp", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown preset 'dtp'") and "did you mean 'dpt'" in err[0]
    assert not (tmp_path / "out").exists()


def test_orchestrate_ls_presets_lists_the_settings(capsys):
    from orchestrator.cli.app import main

    assert main(["ls", "presets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dpt ") and DPT.description in out
    for key, value in DPT.settings.items():
        assert f"    {key}={set_spelling(value)}\n" in out
    assert 'superglue/cb: verbalizer=["yes", "no", "maybe"]' in out


# ====================================================================== a study


def test_a_study_with_fixed_preset_validates_and_its_cells_carry_the_preset(tmp_path, monkeypatch, capsys):
    """fixed: {preset: dpt} in a method's entry: the study validates, and each cell's run has the
    preset's settings except what the study sets (its backbone, train:, fixed:, searched values)."""
    from ptcore.tiny import write_tiny_model

    from orchestrator.cli.app import main
    from orchestrator.study.load import load_study
    from orchestrator.study.plan import compose_run

    t5 = write_tiny_model(tmp_path / "t5", "t5")
    study = {
        "name": "dpt",
        "output_dir": str(tmp_path / "out"),
        "backbones": [{"id": str(t5), "label": "t5"}],
        "tasks": ["superglue/cb", "superglue/wic"],
        "methods": [
            {"name": "dynamic", "fixed": {"preset": "dpt", "prompt_length": 4}},
            {"name": "prompt_tuning", "label": "pt", "fixed": {"preset": "dpt"},
             "search": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.5}}},
        ],
        "train": {"epochs": 1, "batch_size": 8},
        "data_dir": str(FIXTURES),
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    ls = load_study(path)
    cells = {(c.task, c.method.display()): c for c in ls.cells()}
    assert len(cells) == 4
    for (task, method), cell in cells.items():
        cfg = make_run_config(compose_run(ls, cell, seed=1))
        assert cfg.preset == "dpt" and cfg.model == str(t5)  # the study's backbone, not the preset's model
        assert (cfg.batch_size, cfg.epochs, cfg.seed) == (8, 1, 1)  # the study's train: and seed
        assert (cfg.optimizer, cfg.lr_schedule, cfg.warmup_steps, cfg.grad_accum_steps, cfg.max_length) == (
            "adafactor", "constant", 500, 4, 480)
        assert cfg.template == (DPT.tasks[task]["template"] if task in DPT.tasks else None)
        if method == "dynamic":
            assert cfg.method_args.prompt_length == 4 and cfg.method_args.selector == "linear_relu" and cfg.lr == 0.3
        else:
            assert cfg.method == "prompt_tuning" and cfg.method_args.model_dump() == {"prompt_length": 20, "init": "vocab_first"}
            searched = make_run_config(compose_run(ls, cell, {"lr": 0.02}))
            assert searched.lr == 0.02 and searched.optimizer == "adafactor"


# ====================================================================== a run


def test_a_dpt_run_trains_on_a_tiny_t5(tmp_path):
    """The preset's run as a whole trains (tiny random T5, the fixture CB): dynamic prompting
    with the reference's position, selector and schedule, Adafactor, 32 examples in 4 slices."""
    from ptcore.tiny import write_tiny_model
    from ptcore.train import train

    t5 = write_tiny_model(tmp_path / "t5", "t5")
    cfg = make_run_config({"task": "superglue/cb", "preset": "dpt", "model": str(t5), "epochs": 2, "data_dir": str(FIXTURES),
                           "threads": 1})
    result = train(cfg, progress=False)
    assert result["config"]["preset"] == "dpt" and result["config_hash"] == cfg.config_hash()
    assert {k: result["config"][k] for k in ("optimizer", "lr", "grad_accum_steps", "template")} == {
        "optimizer": "adafactor", "lr": 0.3, "grad_accum_steps": 4, "template": DPT.tasks["superglue/cb"]["template"]}
    assert result["val"]["primary"] is not None and len(result["history"]) == 2
