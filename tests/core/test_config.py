"""ptcore.config: the one typed run spec (method options as the method's own config class) and
the one spelling of every setting key (ptcore.config.flat_settings)."""

import json

import pytest

from ptcore.config import RunConfig, flat_settings, make_run_config
from ptcore.errors import ConfigError
from ptcore.methods import METHODS, get_method
from ptcore.methods.dynamic.config import DynamicConfig
from ptcore.methods.ptuning_v2.config import PTuningV2Config


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_method_args_is_the_methods_own_config_class(method):
    cfg = make_run_config({"task": "superglue/cb", "method": method})
    assert type(cfg.method_args) is get_method(method).config_cls  # the union is discriminated by `method`
    # dumped with every option, defaults filled in: the record of a run names all of them
    assert cfg.model_dump()["method_args"] == get_method(method).config_cls().model_dump()


def test_method_args_built_once_from_a_mapping_and_kept():
    cfg = make_run_config({"task": "superglue/cb", "method": "ptuning_v2", "method_args": {"prompt_length": 4, "depth": 2}})
    assert isinstance(cfg.method_args, PTuningV2Config)
    assert (cfg.method_args.prompt_length, cfg.method_args.depth, cfg.method_args.prefix_dropout) == (4, 2, 0.1)
    # a re-validated dump (run_config.json, result.json's config) is the same run spec
    again = make_run_config(json.loads(cfg.model_dump_json()))
    assert again == cfg and again.config_hash() == cfg.config_hash()
    # a config object is taken as it is, for its own method
    assert make_run_config({"task": "superglue/cb", "method": "ptuning_v2", "method_args": cfg.method_args}).method_args is cfg.method_args


def test_config_hash_unchanged_by_typed_method_args():
    """Hashes group seeds (collect, studies): the typed method_args must hash exactly as the
    mapping did, so earlier runs keep theirs (values computed before the change, commit 65380ec)."""
    hashes = {
        ("ptuning_v2", (("prompt_length", 4),)): "4dbf7c734425",
        # the old default estimator, spelled out: the hash of every dynamic run made before the default
        # became the DP reference's mixture (a different computation, so a different hash)
        ("dynamic", (("estimator", "first_order"),)): "09687020767c",
        # options a forward does not read do not split hashes (the estimator without a position choice)
        ("dynamic", (("base", "deep"), ("pool_size", 2), ("estimator", "mixture_soft"))): "522f10114abb",
        ("lora", (("r", 4),)): "76c02e1e1151",
        ("finetune", ()): "3baba1c35096",
    }
    for (method, opts), expected in hashes.items():
        assert make_run_config({"task": "superglue/cb", "method": method, "method_args": dict(opts)}).config_hash() == expected


@pytest.mark.parametrize(
    "values, message",
    [
        ({"method": "ptuning_v2", "method_args": {"prompt_lenth": 4}}, "method 'ptuning_v2' has no option 'prompt_lenth'"),
        ({"method": "finetune", "method_args": PTuningV2Config()}, "method_args is a PTuningV2Config, but method is 'finetune'"),
        ({"method": "ptuning_v2", "method_args": [4]}, "method_args: expected a mapping of 'ptuning_v2' options"),
        ({"method": "dynamic", "method_args": {"tau0": -1}}, "method 'dynamic' option 'tau0'"),
    ],
)
def test_bad_method_args_name_the_problem(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_run_config({"task": "superglue/cb", **values})


def test_no_options_means_the_methods_defaults():
    for given in ({}, {"method_args": None}, {"method_args": {}}):
        cfg = RunConfig(task="superglue/cb", method="dynamic", **given)
        assert cfg.method_args == DynamicConfig()


def test_flat_settings_spell_keys_as_a_study_file_does():
    resolved = make_run_config({"task": "superglue/cb", "method": "dynamic", "lr": 0.02, "method_args": {"tau0": 1.5}}).resolved()
    flat = flat_settings(resolved)
    assert "method_args" not in flat
    assert flat["lr"] == 0.02 and flat["tau0"] == 1.5 and flat["prompt_length"] == 16  # as `search: {lr, tau0}` spells them
    assert set(flat) == (set(resolved) - {"method_args"}) | set(resolved["method_args"])
    # an option named like a run setting cannot shadow it: it keeps a prefix
    assert flat_settings({"lr": 0.1, "method_args": {"lr": 0.5}}) == {"lr": 0.1, "method.lr": 0.5}


def test_one_spelling_in_mlflow_collect_and_report():
    """A searched option reads the same in the study file, the MLflow params, collect's settings
    and the report's searched-settings label."""
    from orchestrator.cli.collect import flat as collect_flat
    from orchestrator.common.labels import readable_params
    from orchestrator.tracking.tracker import flatten_config

    resolved = make_run_config({"task": "superglue/cb", "method": "dynamic", "method_args": {"tau0": 1.25}}).resolved()
    assert flatten_config(resolved)["tau0"] == "1.25"
    assert collect_flat(resolved)["tau0"] == 1.25
    assert readable_params({"tau0": collect_flat(resolved)["tau0"]}) == "τ0=1.25"
