"""Output files are written atomically with the mode any new file gets under the umask
(``0o666 & ~umask``), never mkstemp's 0600: colleagues in the group can read the results."""

import os
import stat
from pathlib import Path

import pytest

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore import fileio


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def expected(umask: int) -> int:
    return 0o666 & ~umask


def no_temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).rglob(".*") if p.is_file())


def test_umask_expectations():
    assert expected(0o022) == 0o644 and expected(0o077) == 0o600 and expected(0o002) == 0o664


def test_json_text_bytes(tmp_path, umask):
    fileio.write_json_atomic(tmp_path / "a" / "x.json", {"a": 1})
    fileio.write_text_atomic(tmp_path / "y.txt", "hi\n")
    fileio.write_bytes_atomic(tmp_path / "z.bin", b"\x00\x01")
    with fileio.atomic_path(tmp_path / "w.bin") as tmp:
        Path(tmp).write_bytes(b"by name")
    for name in ("a/x.json", "y.txt", "z.bin", "w.bin"):
        assert mode(tmp_path / name) == expected(umask), name
    assert (tmp_path / "w.bin").read_bytes() == b"by name"
    assert no_temp_files(tmp_path) == []


def test_replacing_a_file_takes_the_umask_mode(tmp_path, umask):
    target = tmp_path / "r.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    fileio.write_json_atomic(target, [1, 2])
    assert mode(target) == expected(umask)


def test_error_leaves_neither_file_nor_temp(tmp_path):
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(tmp_path / "x.csv") as f:
            f.write("half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(tmp_path / "z.bin") as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_checkpoint_files(tmp_path, umask):
    from ptcore.checkpoint import CONFIG, WEIGHTS, save_checkpoint
    from ptcore.config import RunConfig
    from ptcore.model import build_model

    bb = tiny_backbone("bert", tmp_path / "bb")
    cfg = RunConfig(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 2}, data_dir=str(FIXTURES))
    out = save_checkpoint(build_model(cfg, bb), cfg, tmp_path / "ckpt")
    assert mode(out / WEIGHTS) == expected(umask)
    assert mode(out / CONFIG) == expected(umask)
    assert no_temp_files(out) == []


def test_ledger_and_predictions(tmp_path, umask):
    from orchestrator.ledger.results import ResultsTable, write_predictions

    table = ResultsTable(tmp_path / "out" / "results.csv")
    table.add({"study": "s", "cell": "c", "trial_id": "t1", "status": "ok"})
    assert mode(tmp_path / "out" / "results.csv") == expected(umask)
    rel = write_predictions(tmp_path / "out", "c", "t1", 0, {"val": {"predictions": [1], "references": [1]}})
    assert mode(tmp_path / "out" / rel) == expected(umask)
    assert ResultsTable(tmp_path / "out" / "results.csv").rows[0]["trial_id"] == "t1"
    assert no_temp_files(tmp_path / "out") == []


def test_result_json_and_data_cache(tmp_path, umask):
    """``result.json`` of a run goes through ptcore.checkpoint.write_json_atomic (the same helper);
    the tokenized-data cache too."""
    from ptcore.checkpoint import write_json_atomic
    from ptcore.data import encode_split
    from ptcore.tasks import TASKS

    write_json_atomic(tmp_path / "run" / "result.json", {"val": {"primary": 0.5}})
    assert mode(tmp_path / "run" / "result.json") == expected(umask)

    class Kind:
        @staticmethod
        def encode(examples, tokenizer, max_length):
            return [{"input_ids": [1, 2, 3]} for _ in examples]

    class Tokenizer:
        name_or_path = "stub"

        def __len__(self):
            return 10

    encode_split(Kind, TASKS.get("superglue/cb"), [{"x": 1}], Tokenizer(), max_length=8, split="train", cache_dir=str(tmp_path / "cache"))
    (cached,) = list((tmp_path / "cache").iterdir())
    assert mode(cached) == expected(umask)
