import json

import pytest

from orchestrator.cli.app import main
from orchestrator.cli.collect import load_results, summarize


def fake(root, where, seed, val, dev=0.5, task="superglue/cb", method="ptuning_v2", data_seed=0, **settings):
    """A result.json at ``root/where`` whose resolved config holds ``settings``."""
    d = root / where
    d.mkdir(parents=True)
    config = {"task": task, "method": method, "seed": seed, "data_seed": data_seed, "lr": 0.01, "epochs": 20,
              "data_dir": str(root), "method_args": {"prompt_length": 16, "depth": None}}
    for key, value in settings.items():
        (config["method_args"] if key == "prompt_length" else config)[key] = value
    r = {"task": task, "method": method, "seed": seed, "val": {"primary": val}, "dev": {"primary": dev},
         "trainable_pct": 0.3, "wall_s": 10.0, "config": config}
    (d / "result.json").write_text(json.dumps(r))


def table_line(out: str, text: str) -> str:
    (line,) = [line for line in out.splitlines() if text in line]
    return line


def test_collect_mean_std(tmp_path, capsys):
    for seed, v in enumerate([0.6, 0.7, 0.8]):
        fake(tmp_path, f"cb/pt2/seed{seed}", seed, v)
    fake(tmp_path, "cb/pt/seed0", 0, 0.5, method="prompt_tuning")
    assert main(["collect", str(tmp_path), "--csv", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    line_pt2 = table_line(out, "P-Tuning v2")
    assert "70.0 ± 10.0" in line_pt2 and "| CB · P-Tuning v2 " in line_pt2  # mean and sample std of 60/70/80
    line_pt = table_line(out, "Prompt tuning")
    assert "50.0" in line_pt and "±" not in line_pt  # single seed: no ±
    assert (tmp_path / "rows.csv").read_text().count("\n") == 5


def test_two_configs_in_one_tree_are_not_averaged(tmp_path, capsys):
    """Runs under one directory name but with different configs: two groups, each labelled
    by what differs; the seeds of one config group wherever they lie."""
    fake(tmp_path, "grid/a/seed0", 0, 0.6)
    fake(tmp_path, "grid/a/seed1", 1, 0.8, lr=0.001)  # same dir name as a/seed0, another config
    fake(tmp_path, "elsewhere/x", 1, 0.8)  # seed 1 of the first config, elsewhere
    fake(tmp_path, "grid/b/seed0", 0, 0.4, lr=0.001, prompt_length=8)
    df = load_results(tmp_path)
    summary = summarize(df)
    assert sorted(summary["seeds"]) == [1, 1, 2]
    assert set(summary["label"]) == {
        "CB · P-Tuning v2 · lr=0.01, prompt length=16",
        "CB · P-Tuning v2 · lr=1e-3, prompt length=16",
        "CB · P-Tuning v2 · lr=1e-3, prompt length=8",
    }
    first = summary[summary["label"] == "CB · P-Tuning v2 · lr=0.01, prompt length=16"].iloc[0]
    assert first["mean"] == pytest.approx(70.0) and first["std"] == pytest.approx(14.142, abs=1e-3)
    assert main(["collect", str(tmp_path)]) == 0
    assert "70.0 ± 14.1" in table_line(capsys.readouterr().out, "lr=0.01")


def test_seeds_and_data_seeds_of_one_config_group(tmp_path):
    """Few-shot grids pair data_seed with the seed: still one configuration."""
    for seed in range(3):
        fake(tmp_path, f"fewshot/seed{seed}", seed, 0.5 + seed / 10, data_seed=seed, train_size=32)
    fake(tmp_path, "full/seed0", 0, 0.9)
    summary = summarize(load_results(tmp_path))
    assert sorted(summary["seeds"]) == [1, 3]
    assert set(summary["label"]) == {"CB · P-Tuning v2 · train size=32", "CB · P-Tuning v2 · train size=none"}


def test_collect_empty_dir_is_an_error(tmp_path, capsys):
    assert main(["collect", str(tmp_path)]) == 2
    assert "no result.json" in capsys.readouterr().err


def test_result_without_config_is_an_error(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r/result.json").write_text(json.dumps({"task": "superglue/cb", "seed": 0, "val": {"primary": 0.5}}))
    assert main(["collect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "r/result.json: not an `orchestrate run` result.json (no 'method', 'config'" in err[0]
