"""``orchestrate run --config FILE`` re-runs a result exactly (same resolved config and hash,
same scores on the CPU); ``--overwrite`` replaces an existing result, which is refused without it."""

from __future__ import annotations

import json

from conftest import FIXTURES
from tinymodels import tiny_backbone

from orchestrator.cli.app import main


def _model(tmp_path):
    d = tmp_path / "model"
    bb = tiny_backbone("bert", d)
    bb.model.save_pretrained(d)
    return d


def test_rerun_from_result_json_and_overwrite(tmp_path, capsys):
    model = _model(tmp_path)
    first = ["run", "--task", "superglue/cb", "--model", str(model), "--epochs", "1", "--data-dir", str(FIXTURES),
             "--set", "batch_size=4", "--set", "prompt_length=2", "--set", "lr=0.02", "--output", str(tmp_path / "a"), "--no-progress"]
    assert main(first) == 0
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    assert main(["run", "--config", str(tmp_path / "a" / "result.json"), "--output", str(tmp_path / "b"), "--no-progress"]) == 0
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert b["config_hash"] == a["config_hash"] and b["config"] == a["config"]
    assert b["val"] == a["val"] and b["history"] == a["history"]
    # from the checkpoint's run_config.json, with an override
    assert main(["run", "--config", str(tmp_path / "a" / "checkpoint" / "run_config.json"), "--set", "seed=3",
                 "--output", str(tmp_path / "c"), "--no-progress"]) == 0
    c = json.loads((tmp_path / "c" / "result.json").read_text())
    assert c["config"]["seed"] == 3 and c["config"]["method_args"] == a["config"]["method_args"]
    capsys.readouterr()
    assert main(first) == 2  # the result exists
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert main([*first, "--overwrite"]) == 0


def test_config_file_errors_are_one_line(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "none.json")]) == 2
    assert "--config" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{}")
    assert main(["run", "--config", str(tmp_path / "x.json")]) == 2
    assert "no run settings in it" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "give --task" in capsys.readouterr().err


def test_epoch_dev_scores_show_with_the_progress_bar(tmp_path, capsys):
    model = _model(tmp_path)
    assert main(["run", "--task", "superglue/cb", "--model", str(model), "--epochs", "2", "--data-dir", str(FIXTURES),
                 "--set", "batch_size=4", "--set", "prompt_length=2"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/2 loss " in err and "epoch 2/2 loss " in err and " dev accuracy " in err
