"""Bad input: one line on stderr, non-zero exit, nothing written."""

import subprocess
import sys

import pytest

from conftest import FIXTURES
from tinymodels import save_tiny

from orchestrator.cli.app import main


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
        [sys.executable, "-m", "orchestrator", "run", "--task", "glue/nope"], capture_output=True, text=True, timeout=120
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


# ------------------------------------------------------------------ a study's data, checked before anything starts

STUDY = """name: datacheck
output_dir: {out}
backbones: [{{id: sentence-transformers/all-MiniLM-L6-v2, layers: 2}}]
tasks: [superglue/cb, glue/sst2]
methods: [{{name: finetune, fixed: {{lr: 1.0e-4}}}}]
"""


def study_with_data(tmp_path, monkeypatch, data) -> tuple:
    """A study file over CB + SST-2 whose data directory is ``data`` (None: none set)."""
    out = tmp_path / "out"
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(out=out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if data is None:
        monkeypatch.delenv("PTCORE_DATA_DIR", raising=False)
    else:
        monkeypatch.setenv("PTCORE_DATA_DIR", str(data))
    return path, out


def copy_task_data(dst, broken: bool = False):
    import shutil

    for rel in ("superglue/CB", "glue/SST-2"):
        shutil.copytree(FIXTURES / rel, dst / rel)
    if broken:
        with open(dst / "superglue/CB/train.jsonl", "a") as f:
            f.write('{"premise": "a row cut short",\n')
    return dst


@pytest.mark.parametrize("command", [["validate"], ["study", "--dry-run"]], ids=["validate", "dry-run"])
@pytest.mark.parametrize(
    "case,needle",
    [
        ("empty", "tasks: superglue/cb: task superglue/cb: no data files found (expected"),
        ("one task missing", "tasks: glue/sst2: task glue/sst2: no data files found"),
        ("malformed row", "tasks: superglue/cb: " + "{data}/superglue/CB/train.jsonl:"),
        ("no data dir, offline", "data_dir: not set (nor PTCORE_DATA_DIR), and HF_HUB_OFFLINE forbids"),
    ],
)
def test_study_data_is_checked_before_anything_starts(capsys, tmp_path, monkeypatch, command, case, needle):
    """``validate`` and ``study --dry-run`` read every task's files with the runs' own reader:
    a missing or malformed file, or no data at all while offline, exits 2 with one line
    naming the study file, the task and the fix, and creates no output directory."""
    data = tmp_path / "data"
    data.mkdir()
    if case == "one task missing":
        copy_task_data(data)
        import shutil

        shutil.rmtree(data / "glue")
    elif case == "malformed row":
        copy_task_data(data, broken=True)
    path, out = study_with_data(tmp_path, monkeypatch, None if case.startswith("no data") else data)
    code, err = run_cli(capsys, *command[:1], str(path), *command[1:])
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    assert needle.format(data=data) in lines[0], lines[0]
    assert not out.exists()


def test_study_data_check_reports_the_splits(capsys, tmp_path, monkeypatch):
    path, out = study_with_data(tmp_path, monkeypatch, copy_task_data(tmp_path / "data"))
    assert main(["validate", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "data: superglue/cb: train " in printed and "glue/sst2: train " in printed
    assert main(["study", str(path), "--dry-run"]) == 0
    assert "data check   superglue/cb: train" in capsys.readouterr().out
    assert not out.exists()


def test_near_misses_are_suggested():
    """A task's short name finds its benchmark (``cb`` -> ``superglue/cb``; ``rte`` is in two),
    and another tool's name for a setting finds ours (``learning_rate`` -> ``lr``)."""
    import pytest

    from ptcore.config import apply_overrides
    from ptcore.errors import ConfigError
    from ptcore.tasks import TASKS

    assert TASKS.suggestions("cb")[0] == "superglue/cb"
    assert set(TASKS.suggestions("rte")[:2]) == {"glue/rte", "superglue/rte"}
    assert TASKS.suggestions("SST2")[0] == "glue/sst2"
    assert "(did you mean 'superglue/cb'?); available: " in TASKS.unknown_message("cb")
    with pytest.raises(ConfigError, match=r"did you mean 'lr'\?"):
        apply_overrides({"task": "superglue/cb", "method": "ptuning_v2"}, ["learning_rate=1e-3"])
    with pytest.raises(ConfigError, match=r"did you mean 'prompt_length'"):
        apply_overrides({"task": "superglue/cb", "method": "ptuning_v2"}, ["num_virtual_tokens=8"])
