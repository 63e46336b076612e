"""``orchestrate ls`` and ``validate`` answer without loading torch (names and options come
from torch-free config classes; encoders are imported when a model is built), and ``ls
methods`` shows each option's type and default, each method's default lr and the run settings."""

from __future__ import annotations

import subprocess
import sys

from conftest import FIXTURES

PROBE = """
import sys
from orchestrator.cli.app import main
rc = main({argv!r})
print("TORCH_LOADED" if "torch" in sys.modules else "NO_TORCH", rc)
"""


def _run(argv, tmp_path) -> str:
    r = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_ls_and_validate_need_no_torch(tmp_path):
    for argv in (["ls", "methods"], ["ls", "tasks"], ["ls", "backbones"]):
        assert _run(argv, tmp_path).strip().endswith("NO_TORCH 0"), argv
    study = tmp_path / "s.yaml"
    study.write_text(f"name: s\nbackbones: [{{id: minilm, layers: 2}}]\ntasks: [superglue/cb]\nmethods: [{{name: lora}}, {{name: ptuning_v2}}]\n"
                     f"data_dir: {FIXTURES}\n")
    assert _run(["validate", str(study)], tmp_path).strip().endswith("NO_TORCH 0")


def test_ls_methods_shows_types_defaults_and_run_settings(tmp_path):
    out = _run(["ls", "methods"], tmp_path)
    assert "(default lr 0.0005)" in out and "(default lr 2e-05)" in out  # lora, finetune
    assert "    r: int = 8  # rank of each update" in out
    assert "    prompt_length: int = 16" in out
    assert "run settings (every method" in out and "    precision: 'auto' | 'fp32' | 'bf16' | 'fp16' = 'auto'" in out
    assert "    task: str = required" in out
