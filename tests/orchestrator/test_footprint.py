"""The disk budget (orchestrator.study.footprint, orchestrator.study.preflight.check_disk): a
study's estimated footprint counts runs x checkpoint sizes, each checkpoint counted on the
meta device exactly as a real ptcore run writes it; a study that does not fit the free space is
refused before anything starts, with one line naming both figures; ``--dry-run`` prints the
estimate; ``validate`` does not check the disk. Fast: tiny models, no Ray."""

from __future__ import annotations

import re
import shutil
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest
from orch_study_helpers import FIXTURE_DATA, tiny_bert, tiny_study, write_study  # noqa: F401  (tiny_bert: fixture)

from orchestrator.cli.app import main
from orchestrator.study import final_seeds, load_study
from orchestrator.study import footprint as F
from orchestrator.study import preflight as P
from orchestrator.study.plan import compose_run
from ptcore.config import make_run_config
from ptcore.tasks import get_task, load_splits

Usage = namedtuple("Usage", "total used free")


def _study(model_dir: Path, out: Path, **overrides) -> dict:
    """tiny_study with fine-tuning beside P-Tuning v2 (depth searched: its checkpoint differs)."""
    raw = tiny_study(model_dir, out, **overrides)
    raw["methods"] = [
        {"name": "finetune", "search": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}},
        {"name": "ptuning_v2", "fixed": {"prompt_length": 4}, "search": {"depth": {"type": "choice", "values": [1, None]}}},
    ]
    return raw


def _real_run(model_dir: Path, out: Path, method: str, **opts) -> dict:
    """What ptcore itself records for a run: one epoch on the CB fixture."""
    from ptcore.train import train

    values = {"task": "superglue/cb", "method": method, "model": str(model_dir), "method_args": opts, "data_dir": str(FIXTURE_DATA),
              "epochs": 1, "batch_size": 4, "max_length": 32, "seed": 0}
    return train(make_run_config(values), output=out, progress=False)


@pytest.mark.parametrize("method,opts", [("finetune", {}), ("ptuning_v2", {"prompt_length": 4}),
                                         ("ptuning_v2", {"prompt_length": 4, "depth": 1})], ids=["finetune", "ptv2", "ptv2-depth1"])
def test_meta_count_is_what_a_real_run_writes(tiny_bert, tmp_path, method, opts):
    """The meta-device count equals the trainable parameters of a real ptcore run, and its bytes
    equal the run's ``checkpoint_bytes`` and the size of the tensors its checkpoint stores."""
    from safetensors.torch import load_file

    from ptcore.checkpoint import WEIGHTS

    result = _real_run(tiny_bert, tmp_path / "run", method, **opts)
    cfg = make_run_config({"task": "superglue/cb", "method": method, "model": str(tiny_bert), "method_args": opts})
    got, why = F.checkpoint_bytes(cfg)
    assert why is None
    assert got == result["trainable_params"] * F.BYTES_PER_PARAM == result["checkpoint_bytes"]
    stored = load_file(str(Path(result["checkpoint"]) / WEIGHTS))
    assert got == sum(t.numel() * t.element_size() for t in stored.values())


def test_estimate_counts_runs_times_checkpoints(tiny_bert, tmp_path):
    """Kept checkpoints = each cell's final seeds x its largest checkpoint (searched depth: the
    deepest); Ray's copies: the biggest max_concurrent final trials; predictions: final runs x
    val items; a checkpoint over tracking.max_checkpoint_mb stays out of MLflow."""
    ls = load_study(raw=_study(tiny_bert, tmp_path / "out"), cwd=tmp_path)
    fp = F.estimate(ls)

    def real(cell) -> int:
        cfg = make_run_config(compose_run(ls, cell, {"depth": None} if cell.method.name == "ptuning_v2" else {}))
        return F.checkpoint_bytes(cfg)[0]

    cells = ls.cells()
    assert len(cells) == 4 and fp.runs == 4 * 2 + 4 * 2  # 2 search trials + seeds 0, 1 per cell
    ft = [c for c in cells if c.method.name == "finetune"]
    full = F.checkpoint_bytes(make_run_config(compose_run(ls, ft[0])))[0]
    assert full > 10 * real([c for c in cells if c.method.name == "ptuning_v2"][0])  # fine-tuning: every weight
    kept = sum(len(final_seeds(ls.study, c)) * real(c) for c in cells)
    assert fp.breakdown["checkpoints"] == kept
    assert dict(next(p for p in fp.parts if p.name == "checkpoints").detail)["finetune"] == sum(2 * real(c) for c in ft)
    val = {t: len(load_splits(get_task(t), FIXTURE_DATA)[0]["val"]) for t in ("superglue/cb", "superglue/rte")}
    assert fp.breakdown["predictions"] == 2 * 2 * sum(val.values()) * F.PREDICTION_BYTES  # 2 methods x 2 seeds x val items
    assert fp.breakdown["MLflow + ledgers"] == F.LEDGER_FIXED + 16 * F.LEDGER_PER_RUN
    ray = next(p for p in fp.parts if p.name.startswith("Ray checkpoint copies"))
    assert ray.transient and ray.where == ls.storage_path
    # local-mode search trials persist nothing: the 2 biggest final packs (2 runs each: a fine-tuning cell's seeds)
    assert ray.bytes == sum(2 * (real(c) + F.RUN_FILES + val[c.task] * F.JSONL_BYTES) for c in ft)
    assert fp.total == sum(p.bytes for p in fp.parts)
    assert fp.tmp == 2 * max(real(c) + F.RUN_FILES + val[c.task] * F.JSONL_BYTES for c in cells) + F.RAY_SESSION

    capped = F.estimate(load_study(raw=_study(tiny_bert, tmp_path / "out", tracking={"max_checkpoint_mb": full / 2e6}), cwd=tmp_path))
    assert capped.breakdown["checkpoints"] == kept - sum(2 * real(c) for c in ft)
    kept_all = F.estimate(load_study(raw=_study(tiny_bert, tmp_path / "out", ray={"keep_train_checkpoints": True}), cwd=tmp_path))
    assert kept_all.breakdown["Ray checkpoint copies"] > ray.bytes  # every trial's copies, search ones persisting nothing still


def test_a_method_not_buildable_on_meta_counts_the_whole_backbone(tiny_bert, tmp_path, monkeypatch):
    import ptcore.model

    def broken(cfg, backbone):
        raise RuntimeError("needs real tensors")

    monkeypatch.setattr(ptcore.model, "build_model", broken)
    monkeypatch.setattr(F, "_COUNTS", {})
    cfg = make_run_config({"task": "superglue/cb", "method": "ptuning_v2", "model": str(tiny_bert), "method_args": {"prompt_length": 4}})
    got, why = F.checkpoint_bytes(cfg)
    whole = sum(p.numel() * 4 for p in F._meta_backbone(cfg).model.parameters())
    assert got == whole and "counted as the whole backbone (an upper bound" in why


def _no_runner(monkeypatch):
    """A study that gets past the checks would import the runner: make that fail the test."""
    fake = types.ModuleType("orchestrator.execution.runner")

    def run_study(*a, **k):
        raise AssertionError("the study started")

    fake.run_study = run_study
    monkeypatch.setitem(sys.modules, "orchestrator.execution.runner", fake)


def _small_disk(monkeypatch, free: int) -> None:
    real = shutil.disk_usage

    def disk_usage(path):
        u = real(path)
        return Usage(u.total, u.total - free, free)

    monkeypatch.setattr(P.shutil, "disk_usage", disk_usage)


def test_a_study_that_does_not_fit_is_refused_with_one_line(tiny_bert, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    path = write_study(tmp_path / "s.yaml", _study(tiny_bert, out))
    _no_runner(monkeypatch)
    _small_disk(monkeypatch, 1_000_000)
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: disk: not enough space: need ~")
    assert ", free 1.0 MB, at " in err and str(out) in err
    for fix in ("final.seeds", "budget.max_concurrent", "--output-dir", "RAY_TMPDIR"):
        assert fix in err, err
    assert "tracking.max_checkpoint_mb" not in err  # the tiny fine-tuned checkpoints are under 10 MB: no use naming it
    assert not out.exists()

    # the dry run prints the plan, marks the estimate, then refuses the same way
    assert main(["study", str(path), "--dry-run"]) == 2
    cap = capsys.readouterr()
    assert "cells        4 = " in cap.out and "(does NOT fit)" in cap.out
    assert len(cap.err.strip().splitlines()) == 1 and "disk: not enough space" in cap.err


def test_refusal_names_max_checkpoint_mb_for_full_checkpoints(tmp_path, monkeypatch, capsys):
    """MiniLM fine-tuned keeps tens of MB a seed: the line offers tracking.max_checkpoint_mb."""
    raw = {"name": "big", "backbones": [{"id": "all-MiniLM-L6-v2", "layers": 2}], "tasks": ["superglue/cb"],
           "methods": [{"name": "finetune"}, {"name": "prompt_tuning"}], "data_dir": str(FIXTURE_DATA),
           "output_dir": str(tmp_path / "out")}
    path = write_study(tmp_path / "big.yaml", raw)
    _no_runner(monkeypatch)
    _small_disk(monkeypatch, 100_000_000)
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tracking.max_checkpoint_mb: 10 (keeps the finetune checkpoints out of MLflow)" in err
    assert "drop or restrict finetune" in err and ", free 100.0 MB, at " in err
    named = set(re.findall(r"\b([a-z_]+\.[a-z_]+)\b", err.split("to need less:")[1]))
    assert {"tracking.max_checkpoint_mb", "final.seeds", "budget.max_concurrent"} <= named
    assert all(P._exists(k) for k in named), named  # every setting the line names is in the study schema


def test_a_temp_dir_that_does_not_fit_is_refused_on_its_own(tiny_bert, tmp_path, monkeypatch, capsys):
    """The temp dir on another filesystem (here /dev/shm) is checked on its own: the line names
    it, its free space and RAY_TMPDIR."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem for the temp dir")
    monkeypatch.setenv("RAY_TMPDIR", str(shm))
    real = shutil.disk_usage
    monkeypatch.setattr(P.shutil, "disk_usage", lambda p: Usage(1, 1, 1_000) if str(p).startswith(str(shm)) else real(p))
    _no_runner(monkeypatch)
    path = write_study(tmp_path / "s.yaml", _study(tiny_bert, tmp_path / "out"))
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(temp " in err and f", free 1.0 kB, at {shm}; " in err
    assert "RAY_TMPDIR (or TMPDIR) on a disk with more space" in err and "final.seeds" not in err


def test_dry_run_prints_the_estimate(tiny_bert, tmp_path, capsys):
    path = write_study(tmp_path / "s.yaml", _study(tiny_bert, tmp_path / "out"))
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    disk = [line for line in out.splitlines() if line.startswith("  disk ")]
    temp = [line for line in out.splitlines() if line.startswith("  temp ")]
    assert len(disk) == 1 and len(temp) == 1, out
    assert f"in {tmp_path / 'out'} at most" in disk[0] and "checkpoints " in disk[0] and "finetune " in disk[0]
    assert "kept once trials end" in disk[0] and ", free " in disk[0] and "NOT fit" not in disk[0]
    assert "Ray's session logs" in temp[0] and ", free " in temp[0]
    assert not (tmp_path / "out").exists()


def test_validate_does_not_check_the_disk(tiny_bert, tmp_path, monkeypatch, capsys):
    path = write_study(tmp_path / "s.yaml", _study(tiny_bert, tmp_path / "out"))
    _small_disk(monkeypatch, 1)

    def no_estimate(*a, **k):
        raise AssertionError("validate estimated the footprint")

    monkeypatch.setattr(P, "estimate", no_estimate)
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {path}")


def test_resume_needs_the_estimate_less_what_is_there(tiny_bert, tmp_path):
    out = tmp_path / "out"
    ls = load_study(raw=_study(tiny_bert, out), cwd=tmp_path)
    fp, places = P.disk_budget(ls)
    need = next(p for p in places if p.out).need
    out.mkdir()
    (out / "held.bin").write_bytes(b"x" * 1_000_000)
    _, resumed = P.disk_budget(ls, resume=True)
    assert next(p for p in resumed if p.out).need == need - 1_000_000
