"""``orchestrate --version`` and ``orchestrate env`` (what a bug report needs)."""

from __future__ import annotations

from importlib import metadata

import pytest

from orchestrator.cli.app import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"orchestrate {metadata.version('ptcore')}"


def test_env_lists_versions_devices_and_data(capsys, monkeypatch):
    monkeypatch.setenv("PTCORE_DATA_DIR", "/some/data")
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for line in ("ptcore ", "torch ", "transformers ", "peft ", "ray ", "mlflow ", "devices ", "data dir       /some/data ($PTCORE_DATA_DIR)"):
        assert line in out, line
