"""The training loop's record: the timing breakdown and the selection protocol."""

from __future__ import annotations

import json

import pytest

import ptcore.train as train_mod
from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.train import prepare_data, train

PHASES = ("load_s", "data_s", "train_s", "eval_s", "checkpoint_s", "other_s")


def spy_evaluations(monkeypatch, data) -> list[str]:
    """Record the split each ``evaluate`` call reads (in order) while still evaluating."""
    calls: list[str] = []
    real = train_mod.evaluate

    def spy(model, loader, features, examples, spec, device, dist=None):
        calls.append(next(s for s, exs in data.examples.items() if exs is examples))
        return real(model, loader, features, examples, spec, device, dist)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    return calls


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Two epochs of P-Tuning v2 on the CB fixture; records which split each evaluation read."""
    bb = tiny_backbone("bert", tmp_path / "model")
    cfg = RunConfig(
        task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 3}, data_dir=str(FIXTURES),
        epochs=2, batch_size=4, seed=0,
    )  # fmt: skip
    data = prepare_data(cfg, bb, 0)
    calls = spy_evaluations(monkeypatch, data)
    result = train(cfg, backbone=bb, data=data, output=tmp_path / "out", progress=False)
    return result, data, calls, tmp_path / "out"


def test_timing_breakdown(run):
    result, data, _, out = run
    timing = result["timing"]
    assert set(timing) == set(PHASES) | {"train_tokens"}
    assert all(timing[k] >= 0.0 for k in PHASES)
    assert timing["train_s"] > 0 and timing["eval_s"] > 0 and timing["checkpoint_s"] > 0
    # the phases partition the run (wall_s stops before the checkpoint is written)
    assert sum(timing[k] for k in PHASES) == pytest.approx(result["wall_s"], abs=0.5)
    assert timing["train_s"] == pytest.approx(result["train_s"], abs=0.05)
    # every training example's real tokens, once per epoch (padding not counted)
    real_tokens = sum(sum(f["attention_mask"]) for f in data.features["train"])
    assert timing["train_tokens"] == real_tokens * result["epochs_run"]
    assert json.loads((out / "result.json").read_text())["timing"] == timing


def test_result_says_where_the_data_came_from_and_the_limit_used(run, monkeypatch):
    result, data, _, _ = run
    assert result["data_dir"] == str(FIXTURES)  # the config's data_dir, resolved
    assert result["data"]["max_length"] == data.max_length > 0  # the token limit used, not null


def test_result_records_the_data_budget_and_the_reported_metric_inputs(run):
    """The record says what the run was given (split sizes, notes, limits, label counts) and
    keeps the reported split's per-item metric inputs, from which its score is recomputed."""
    from ptcore.metrics import METRICS

    result, data, _, out = run
    budget = result["data"]
    assert budget["sizes"] == {s: len(exs) for s, exs in data.examples.items()}
    assert budget["max_length"] == data.max_length and budget["epochs"] == 2 and budget["batch_size"] == 4
    assert budget["notes"] == data.notes and set(budget["truncated"]) == set(data.examples)
    labels = [ex["label"] for ex in data.examples["train"]]
    assert budget["train_label_counts"] == {str(k): labels.count(k) for k in sorted(set(labels))}
    stored = json.loads((out / "result.json").read_text())["predictions"]
    assert set(stored) == {"val"} and len(stored["val"]["predictions"]) == len(data.examples["val"])
    val = stored["val"]
    assert METRICS.get(result["primary_metric"])(val["predictions"], val["references"], groups=val["groups"]) == pytest.approx(result["val"]["primary"])


def test_selection_on_dev_then_reported_splits(run):
    """dev after every epoch; val only once, after the best epoch is restored."""
    result, _, calls, _ = run
    assert calls == ["dev"] * result["epochs_run"] + ["val"]
    assert "val" in result and "dev" in result


def test_search_runs_skip_the_reported_splits(tmp_path, monkeypatch):
    """``report=False`` (search trials): dev every epoch, val/test never evaluated."""
    bb = tiny_backbone("bert", tmp_path / "model")
    cfg = RunConfig(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 3}, data_dir=str(FIXTURES),
                    epochs=2, batch_size=4, seed=0)  # fmt: skip
    data = prepare_data(cfg, bb, 0)
    calls = spy_evaluations(monkeypatch, data)
    result = train(cfg, backbone=bb, data=data, progress=False, report=False)
    assert calls == ["dev", "dev"]
    assert "val" not in result and "test" not in result and result["dev"]["primary"] is not None


def test_data_cache_reuses_prepared_splits(tmp_path, monkeypatch):
    """``data_cache``: the second run with the same data settings prepares nothing and gets
    the same result as a run without the cache."""
    bb = tiny_backbone("bert", tmp_path / "model")
    cfg = RunConfig(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 3}, data_dir=str(FIXTURES),
                    epochs=1, batch_size=4, seed=0)  # fmt: skip
    cache: dict = {}
    plain = train(cfg, backbone=tiny_backbone("bert", tmp_path / "m1"), progress=False)
    first = train(cfg, backbone=tiny_backbone("bert", tmp_path / "m2"), progress=False, data_cache=cache)
    assert len(cache) == 1
    monkeypatch.setattr(train_mod, "prepare_data", lambda *a, **k: pytest.fail("prepared again despite the cache"))
    second = train(cfg, backbone=tiny_backbone("bert", tmp_path / "m3"), progress=False, data_cache=cache)
    assert plain["val"] == first["val"] == second["val"] and plain["dev"] == second["dev"]


class ThreadsSeen:
    """A callback noting torch's intra-op threads at every epoch's end (inside the run)."""

    def __init__(self):
        self.seen: list[int] = []

    def on_epoch_end(self, epoch, metrics, model, state) -> bool:
        import torch

        self.seen.append(torch.get_num_threads())
        return False


def test_threads_setting_applied_and_compute_recorded(tmp_path):
    """``threads`` is torch's thread count inside the run (and put back after it); result.json
    records what decided the arithmetic under ``compute``; the SST-2 run's data notes say its
    train (and the dev carved from it) are phrases while val is whole sentences."""
    import torch

    from ptcore.config import make_run_config

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2  # a count the run would not have had anyway
    cfg = make_run_config({"task": "glue/sst2", "method": "ptuning_v2", "method_args": {"prompt_length": 3},
                           "data_dir": str(FIXTURES), "epochs": 2, "batch_size": 4, "seed": 0, "threads": want})
    spy = ThreadsSeen()
    result = train(cfg, backbone=tiny_backbone("bert", tmp_path / "model"), callbacks=(spy,), output=tmp_path / "out",
                   progress=False)
    assert spy.seen == [want, want]
    assert torch.get_num_threads() == before  # restored after the run
    stored = json.loads((tmp_path / "out" / "result.json").read_text())
    compute = stored["compute"]
    assert compute["torch_threads"] == want and compute["interop_threads"] == torch.get_num_interop_threads()
    assert compute["kernels"] == "fast" and compute["attention"] == "ptcore"  # the fast kernels' attention on the CPU
    assert compute["device"] == "cpu" and compute["gpu"] is None
    assert compute["precision"] == stored["precision"] == "fp32" and compute["torch"] == torch.__version__
    assert {"cpu_capability", "matmul_precision"} <= set(compute)
    assert stored["config"]["threads"] == want  # run_config.json too: `orchestrate run --config` repeats it
    assert json.loads((tmp_path / "out" / "checkpoint" / "run_config.json").read_text())["threads"] == want
    sst2 = [n for n in stored["data_notes"] if n.startswith("SST-2:")]
    assert len(sst2) == 1 and "phrases" in sst2[0] and "whole sentences" in sst2[0]
    assert sst2 == [n for n in stored["data"]["notes"] if n.startswith("SST-2:")]


def test_threads_unset_leaves_torch_alone_and_the_hash(run):
    """Without ``threads`` the run keeps torch's count (and records it); the setting is not
    hashed, so configs without it keep their hashes and a study's threads=1 runs group with them."""
    import torch

    result, *_ = run
    assert result["config"]["threads"] is None and result["compute"]["torch_threads"] == torch.get_num_threads()
    cfg = RunConfig(task="superglue/cb", method="ptuning_v2")
    assert cfg.model_copy(update={"threads": 1}).config_hash() == cfg.config_hash()
    assert not any(n.startswith("SST-2:") for n in result["data_notes"])  # the note is SST-2's alone
