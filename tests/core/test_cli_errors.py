"""Bad input: one line on stderr, non-zero exit, nothing written."""

import subprocess
import sys

import pytest

from conftest import FIXTURES
from tinymodels import save_tiny

from orchestrator.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--task", "superglue/cbb"], "did you mean 'superglue/cb'"),
        (["--task", "superglue/cb", "--method", "ptuning_v3"], "did you mean 'ptuning_v2'"),
        (["--task", "superglue/cb", "--set", "prompt_lenght=4"], "did you mean 'prompt_length'"),
        (["--task", "superglue/cb", "--set", "lr"], "expected KEY=VALUE"),
        (["--task", "superglue/cb", "--set", "depth=99", "--model", "{tiny}"], "depth=99 is out of range"),
        (["--task", "superglue/cb", "--set", "batch_size=0"], "batch_size"),
        (["--task", "superglue/cb", "--method", "finetune", "--set", "prompt_length=4"], "unknown setting"),
        (["--task", "superglue/wic", "--model", "{tiny}", "--data-dir", "{empty}"], "no data files found"),
        (["--task", "superglue/cb", "--model", "no/such-model-anywhere"], "could not be found"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, argv, needle):
    tiny = save_tiny("bert", tmp_path / "tiny")
    (tmp_path / "empty").mkdir()
    if "--data-dir" not in argv:
        argv = [*argv, "--data-dir", str(FIXTURES)]
    argv = [a.replace("{tiny}", str(tiny)).replace("{empty}", str(tmp_path / "empty")) for a in argv]
    out = tmp_path / "out"
    code, err = run_cli(capsys, "run", *argv, "--epochs", "1", "--output", str(out), "--no-progress")
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert not out.exists(), "nothing may be written on bad input"


def test_missing_data_dir(capsys, tmp_path):
    code, err = run_cli(capsys, "run", "--task", "superglue/cb", "--data-dir", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


def test_exit_code_from_console_entry(tmp_path):
    """The real process exits non-zero with a one-line message (no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "--task", "glue/nope"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown task 'glue/nope'" in proc.stderr


def test_run_writes_result(capsys, tmp_path):
    import json

    tiny = save_tiny("bert", tmp_path / "tiny")
    out = tmp_path / "run"
    code = main(["run", "--task", "superglue/cb", "--model", str(tiny), "--data-dir", str(FIXTURES), "--epochs", "2",
                 "--set", "prompt_length=4", "--output", str(out), "--no-progress"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    for key in ("val", "dev", "best_epoch", "trainable_params", "total_params", "wall_s", "config", "versions"):
        assert key in result
    assert result["val"]["primary"] == result["val"]["accuracy"]
    assert result["config"]["method_args"]["prompt_length"] == 4
    assert (out / "checkpoint" / "trainable.safetensors").is_file()
    # refusing to overwrite a finished run
    assert main(["run", "--task", "superglue/cb", "--model", str(tiny), "--data-dir", str(FIXTURES), "--output", str(out)]) == 2
