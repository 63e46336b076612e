"""A method registers itself, with everything the rest of the tool reads about it: a toy
method in a package outside ptcore, once imported, is in the method registry, ``orchestrate
ls methods``, the CLI's help, the report's labels, colours and order, and the bench's FLOP
plan; unregistered, the report falls back as for a ledger naming a method this version lacks.
The built-in methods keep the labels, colours and markers the report has always drawn."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from orchestrator.cli import app as cli
from orchestrator.bench import flops
from orchestrator.common import labels
from ptcore.errors import PtcoreError
from ptcore.methods import METHODS, FlopPlan, get_method, make_method_config, unregister_method

TOY = "toy_method"

TOY_PACKAGE = '''
"""A method outside ptcore, registering itself the way ptcore/methods/<name>/ do."""

from ptcore.methods import FlopPlan, MethodConfig, register_method


class ToyConfig(MethodConfig):
    prompt_length: int = 3


def flop_plan(options, layers):
    return FlopPlan(extra_tokens=int(options.get("prompt_length", 3)), lowest_grad_layer=layers - 1)


register_method(
    "toy_method",
    config=ToyConfig,
    encoder="toy_plugin.model:ToyEncoder",
    description="a toy prompt (test only)",
    label="Toy prompting",
    color="#123456",
    marker="*",
    order=15,  # between LoRA (10) and prompt tuning (20)
    flops=flop_plan,
    notes=("Toys depart from every paper.",),
)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy package on sys.path, imported (so registered); unregistered afterwards."""
    (tmp_path / "toy_plugin").mkdir()
    (tmp_path / "toy_plugin" / "__init__.py").write_text(textwrap.dedent(TOY_PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = METHODS.names()
    importlib.import_module("toy_plugin")
    yield get_method(TOY)
    if TOY in METHODS:
        unregister_method(TOY)
    sys.modules.pop("toy_plugin", None)
    assert METHODS.names() == before


def test_a_method_outside_ptcore_is_seen_everywhere_once_imported(toy, capsys):
    # the registry
    assert TOY in METHODS and toy.label == "Toy prompting" and toy.notes == ("Toys depart from every paper.",)
    assert make_method_config(TOY, {"prompt_length": 5}).prompt_length == 5

    # orchestrate ls methods
    assert cli.main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    assert f"{TOY:14s} a toy prompt (test only)" in out and "'Toy prompting'" in out
    assert "    prompt_length: int = 3" in out

    # the CLI help that lists the methods, in their display order
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "finetune | lora | toy_method | prompt_tuning | ptuning_v2 | dynamic" in help_text

    # the report: label, colour, marker, order
    assert labels.method_label(TOY) == "Toy prompting"
    assert labels.method_style(TOY) == ("#123456", "*")
    assert labels.METHOD_ORDER == ("finetune", "lora", TOY, "prompt_tuning", "ptuning_v2", "dynamic")
    assert sorted(["dynamic", TOY, "finetune", "not_a_method"], key=labels.method_key) == [
        "finetune", TOY, "dynamic", "not_a_method"]

    # the bench: its FLOP plan, and the FLOPs counted from it
    plan = flops.plan_for(TOY, {"prompt_length": 4}, 2)
    assert plan == FlopPlan(extra_tokens=4, lowest_grad_layer=1)
    dims = flops.EncoderDims(layers=2, hidden=4, intermediate=8)
    assert flops.step_flops(dims, [3], plan) == flops.step_flops(dims, [7], FlopPlan(lowest_grad_layer=1))


def test_unregistered_the_report_falls_back_and_the_bench_refuses(toy):
    unregister_method(TOY)
    assert TOY not in METHODS and TOY not in labels.METHOD_ORDER
    assert labels.method_label(TOY) == TOY  # a ledger naming a method this version lacks
    assert labels.method_style(TOY) not in {labels.method_style(m) for m in labels.METHOD_ORDER}
    assert labels.method_key(TOY) == (len(labels.METHOD_ORDER), TOY)
    with pytest.raises(ValueError, match="unknown method 'toy_method'"):
        flops.plan_for(TOY, {}, 2)


def test_unknown_names_get_did_you_mean(toy):
    with pytest.raises(PtcoreError, match=r"unknown method 'toy_methd' \(did you mean 'toy_method'\?\)"):
        get_method("toy_methd")
    with pytest.raises(ValueError, match="did you mean 'ptuning_v2'"):
        flops.plan_for("ptuning_v3", {}, 2)


def test_a_name_registers_once(toy):
    from ptcore.methods import register_method

    with pytest.raises(ValueError, match="registered twice"):
        register_method(TOY, config=toy.config_cls, encoder="x:Y", description="again", label="Again")
    with pytest.raises(TypeError, match="MethodConfig"):
        register_method("toy_two", config=dict, encoder="x:Y", description="no config", label="Two")
    assert "toy_two" not in METHODS


def test_builtin_methods_keep_their_labels_styles_and_order():
    """What the report has always drawn (its golden files hold these too)."""
    assert labels.METHOD_ORDER == ("finetune", "lora", "prompt_tuning", "ptuning_v2", "dynamic")
    assert {m: labels.method_label(m) for m in labels.METHOD_ORDER} == {
        "finetune": "Fine-tuning", "lora": "LoRA", "prompt_tuning": "Prompt tuning", "ptuning_v2": "P-Tuning v2",
        "dynamic": "Dynamic prompting"}
    assert {m: labels.method_style(m) for m in labels.METHOD_ORDER} == {
        "finetune": ("#0072B2", "o"), "lora": ("#000000", "v"), "prompt_tuning": ("#E69F00", "s"),
        "ptuning_v2": ("#009E73", "^"), "dynamic": ("#CC79A7", "D")}
    for name in METHODS.names():  # each registers a FLOP plan the bench can count
        assert isinstance(flops.plan_for(name, make_method_config(name, {}).model_dump(), 4), FlopPlan), name
