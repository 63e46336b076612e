"""``orchestrate run --workers 2``: one configuration in two local gloo processes (no Ray);
the printed summary and result.json come from rank 0 and say 2 workers."""

from __future__ import annotations

import json

from conftest import FIXTURES
from tinymodels import tiny_backbone

from orchestrator.cli.app import main


def test_run_with_two_workers(tmp_path, capsys):
    model = tmp_path / "model"
    tiny_backbone("bert", model).model.save_pretrained(model)
    rc = main(["run", "--task", "superglue/cb", "--model", str(model), "--epochs", "1", "--data-dir", str(FIXTURES),
               "--set", "batch_size=4", "--set", "prompt_length=2", "--output", str(tmp_path / "out"), "--workers", "2",
               "--no-progress"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["workers"] == 2 and printed["sync_bytes_per_step"] == (printed["trainable_params"] + 2) * 4
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["workers"] == 2 and (tmp_path / "out" / "checkpoint" / "trainable.safetensors").is_file()


def test_workers_below_one_is_refused(tmp_path, capsys):
    assert main(["run", "--task", "superglue/cb", "--workers", "0"]) == 2
    assert "--workers 0: give 1 or more processes" in capsys.readouterr().err
