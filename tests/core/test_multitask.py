"""Multi-task runs (tasks joined by '+'; ptcore.train's one loop with a MixedTasks schedule):
task mixing, one head per task, per-task reports and predictions, MPT-2 initialization, and
what the one loop gives them as it gives single-task runs: gradient accumulation, exact
resume from a saved epoch, data-parallel workers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import ptcore.train as train_mod
from conftest import FIXTURES
from tinymodels import SaveAndStop, Weights, tiny_backbone, tiny_backbone_dropout

from ptcore.checkpoint import load_init
from ptcore.config import make_run_config
from ptcore.errors import ConfigError
from ptcore.config import task_key
from ptcore.distributed import spawn
from ptcore.model import build_model
from ptcore.train import draw_tasks, mixing_weights, train
from ptcore.trainstate import has_train_state

TASKS = "superglue/cb+glue/sst2+superglue/rte"


def cfg(**kw):
    values = {"task": TASKS, "method": "ptuning_v2", "method_args": {"prompt_length": 3}, "data_dir": str(FIXTURES),
              "epochs": 2, "batch_size": 2, "lr": 1e-2, "seed": 0}
    values.update(kw)
    return make_run_config(values)


def test_mixing_weights():
    sizes = {"a": 900, "b": 100}
    assert mixing_weights(sizes, "proportional", 2.0) == pytest.approx({"a": 0.9, "b": 0.1})
    # temperature 2: sqrt sizes, 30 : 10
    assert mixing_weights(sizes, "temperature", 2.0) == pytest.approx({"a": 0.75, "b": 0.25})


@pytest.mark.parametrize("mixing", ["proportional", "temperature"])
def test_batches_mix_tasks_in_proportion(mixing):
    weights = mixing_weights({"a": 900, "b": 90, "c": 10}, mixing, 3.0)
    drawn = Counter(draw_tasks(weights, 20000, torch.Generator().manual_seed(0)))
    for t, p in weights.items():
        assert drawn[t] / 20000 == pytest.approx(p, abs=0.01)
    # seeded: the same schedule again
    assert draw_tasks(weights, 50, torch.Generator().manual_seed(1)) == draw_tasks(weights, 50, torch.Generator().manual_seed(1))


def test_each_head_sees_only_its_own_task(tmp_path, monkeypatch):
    bb = tiny_backbone("bert", tmp_path / "m")
    drawn: list[tuple[str, list]] = []  # (task whose loader gave the batch, its input ids)
    ran: list[tuple[str, int]] = []  # (head that ran, rows it saw)
    real_next = train_mod.Cycle.next

    def spy_next(self):
        batch = real_next(self)
        drawn.append((self.task, batch["input_ids"].tolist()))
        return batch

    monkeypatch.setattr(train_mod.Cycle, "next", spy_next)
    real_build = train_mod.build_model

    def build(c, backbone):
        model = real_build(c, backbone)
        for t in model.tasks:
            model.heads[task_key(t)].register_forward_hook(lambda m, a, o, t=t: ran.append((t, a[0].shape[0])) if m.training else None)
        return model

    monkeypatch.setattr(train_mod, "build_model", build)
    result = train(cfg(epochs=1), backbone=bb, progress=False)
    assert len(drawn) == len(ran) > 0
    assert [t for t, _ in drawn] == [t for t, _ in ran]  # the head of the task drawn, and only it
    assert all(len(ids) == rows for (_, ids), (_, rows) in zip(drawn, ran))
    assert set(result["tasks"]) == set(TASKS.split("+"))


def test_one_step_moves_only_that_task_s_head(tmp_path):
    bb = tiny_backbone("bert", tmp_path / "m")
    model = build_model(cfg(), bb)
    from ptcore.train import prepare_data
    from ptcore.data import make_loader

    c = cfg(task="glue/sst2")
    data = prepare_data(c, bb, model.encoder.extra_tokens)
    view = model.views["glue/sst2"]
    batch = next(iter(make_loader(data.features["train"], view.kind, bb.tokenizer.pad_token_id, 4, shuffle=True)))
    view.kind.loss(view(batch), batch).backward()
    grads = {t: any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.heads[task_key(t)].parameters()) for t in model.tasks}
    assert grads == {"superglue/cb": False, "glue/sst2": True, "superglue/rte": False}
    assert any(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)  # the shared prompts learn


def test_multitask_run_reports_each_task(tmp_path):
    bb = tiny_backbone("bert", tmp_path / "m")
    result = train(cfg(), backbone=bb, output=tmp_path / "out", progress=False)
    tasks = TASKS.split("+")
    for t in tasks:
        assert {"dev", "val"} <= set(result["tasks"][t]) and result["tasks"][t]["examples_seen"] > 0
    assert result["val"]["primary"] == pytest.approx(sum(result["tasks"][t]["val"]["primary"] for t in tasks) / 3)
    assert result["dev"][f"{task_key(tasks[1])}_primary"] == result["tasks"][tasks[1]]["dev"]["primary"]
    assert [r["epoch"] for r in result["history"]] == [1, 2]
    assert (tmp_path / "out" / "checkpoint" / "trainable.safetensors").is_file()


def test_multitask_checkpoint_initializes_a_single_task_run(tmp_path):
    bb = tiny_backbone("bert", tmp_path / "m")
    train(cfg(), backbone=bb, output=tmp_path / "mt", progress=False)
    from ptcore.checkpoint import load_checkpoint

    trained = load_checkpoint(tmp_path / "mt" / "checkpoint", backbone=bb)
    single = build_model(cfg(task="glue/sst2"), bb)
    before = {k: v.clone() for k, v in single.trainable_state_dict().items()}
    note = load_init(single, tmp_path / "mt" / "checkpoint")
    got = single.trainable_state_dict()
    assert "head of glue/sst2" in note
    for name, t in trained.trainable_state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(got[name], t)  # the multi-task prompts
    for name in (n for n in got if n.startswith("head.")):
        assert torch.equal(got[name], trained.trainable_state_dict()["heads.glue-sst2." + name[len("head."):]])
        assert not torch.equal(got[name], before[name])
    # and as a run setting: the single-task run starts there and trains
    result = train(cfg(task="glue/sst2", init_from=str(tmp_path / "mt" / "checkpoint")), backbone=bb, progress=False)
    assert "prompts + the head of glue/sst2" in result["init_from"]


def test_init_from_another_method_is_refused(tmp_path):
    bb = tiny_backbone("bert", tmp_path / "m")
    train(cfg(epochs=1), backbone=bb, output=tmp_path / "mt", progress=False)
    with pytest.raises(ConfigError, match="do not fit this run"):
        load_init(build_model(cfg(task="glue/sst2", method_args={"prompt_length": 5}), bb), tmp_path / "mt" / "checkpoint")


def test_dynamic_shares_selector_and_pool(tmp_path):
    bb = tiny_backbone("bert", tmp_path / "m")
    c = cfg(method="dynamic", method_args={"base": "deep", "prompt_length": 4, "length": "instance", "pool_size": 2}, epochs=1)
    model = build_model(c, bb)
    shared = {n: p.detach().clone() for n, p in model.encoder.named_parameters() if p.requires_grad}
    assert any("pool" in n or "select" in n for n in shared), sorted(shared)
    result = train(c, backbone=bb, output=tmp_path / "out", progress=False)
    from ptcore.checkpoint import load_checkpoint

    after = load_checkpoint(tmp_path / "out" / "checkpoint", backbone=bb)
    moved = [n for n, p in after.encoder.named_parameters() if n in shared and not torch.equal(p, shared[n])]
    assert len(moved) == len(shared)  # one encoder trained by every task
    assert set(result["tasks"]) == set(TASKS.split("+"))


def test_multitask_refuses_duplicate_tasks():
    with pytest.raises(ConfigError, match="listed twice"):
        cfg(task="superglue/cb+superglue/cb")


def test_multitask_result_has_each_task_s_predictions(tmp_path):
    """As a single-task result carries its reported splits' per-item metric inputs, a
    multi-task result carries each task's, keyed by task (and writes them per task)."""
    bb = tiny_backbone("bert", tmp_path / "m")
    result = train(cfg(epochs=1), backbone=bb, output=tmp_path / "out", progress=False)
    tasks = TASKS.split("+")
    assert set(result["predictions"]) == set(tasks)
    for t in tasks:
        val = result["predictions"][t]["val"]
        assert len(val["predictions"]) == len(val["references"]) > 0
        assert (tmp_path / "out" / result["predictions_files"][t]["val"]).is_file()


class HeadRows:
    """Rows each head's forward saw while training (the slices' sizes), and the weights at the end."""

    def __init__(self):
        self.rows: list[int] = []

    def watch(self, model):
        for t in model.tasks:
            model.heads[task_key(t)].register_forward_hook(lambda m, a, o: self.rows.append(a[0].shape[0]) if m.training else None)
        return model

    def on_epoch_end(self, epoch, metrics, model, state):
        self.last = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        return False


def _accum_run(bb, monkeypatch, **kw):
    """A multi-task run without dropout (so slices see what their batch sees), as
    tests/core/test_precision.py's single-task one."""
    watch = HeadRows()
    monkeypatch.setattr(train_mod, "build_model", lambda c, b: watch.watch(build_model(c, b)))
    c = cfg(task="superglue/cb+superglue/rte", batch_size=4, seed=1, lr=5e-3, head_dropout=0.0,
            method_args={"prompt_length": 3, "prefix_dropout": 0.0}, **kw)
    result = train(c, backbone=bb.copy(), callbacks=(watch,), progress=False)
    return result, watch


def test_multitask_accumulated_slices_equal_one_batch(tmp_path, monkeypatch):
    """grad_accum_steps = k: each batch of 4 in k slices, one backward each, the same update:
    the same losses and weights after two epochs (as a single-task run, test_precision.py)."""
    bb = tiny_backbone("bert", tmp_path / "m")
    whole, w1 = _accum_run(bb, monkeypatch)
    assert max(w1.rows) == 4
    for k in (2, 4):
        acc, wk = _accum_run(bb, monkeypatch, grad_accum_steps=k)
        assert max(wk.rows) <= -(-4 // k) and len(wk.rows) > len(w1.rows)  # the heads saw the slices, not the batches
        for got, want in zip(acc["history"], whole["history"]):
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        for name in w1.last:
            torch.testing.assert_close(wk.last[name], w1.last[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("at", [1, 2])
def test_multitask_resumed_run_equals_uninterrupted_run(tmp_path, at):
    """Stopped after epoch ``at`` and continued from the saved state: the same history, weights,
    best epoch and examples per task as the run that never stopped. Dropout on and dynamic
    prompting's Gumbel noise, and each task's loader stopped mid-shuffle (batch 3 of 8 / 7
    examples): every stream the schedule reads has to come back where it was."""
    bb = tiny_backbone_dropout("bert", tmp_path / "m")
    c = cfg(task="superglue/cb+superglue/rte", method="dynamic", method_args={"prompt_length": 3, "pool_size": 2},
            epochs=3, batch_size=3, seed=3, warmup_ratio=0.3)
    whole_w = Weights()
    whole = train(c, backbone=bb.copy(), callbacks=(whole_w,), progress=False)
    first = train(c, backbone=bb.copy(), callbacks=(SaveAndStop(at, tmp_path / "state"),), progress=False)
    assert first["epochs_run"] == at and has_train_state(tmp_path / "state")
    rest_w = Weights()
    rest = train(c, backbone=bb.copy(), callbacks=(rest_w,), progress=False, resume=tmp_path / "state")
    assert rest["resumed_at"] == [at]
    assert rest["history"] == whole["history"]  # bit for bit: losses, lr, dev scores, temperatures
    assert rest["best_epoch"] == whole["best_epoch"] and rest["val"] == whole["val"]
    assert {t: r["examples_seen"] for t, r in rest["tasks"].items()} == {t: r["examples_seen"] for t, r in whole["tasks"].items()}
    assert rest["timing"]["train_tokens"] == whole["timing"]["train_tokens"]
    for k in whole_w.last:
        assert torch.equal(rest_w.last[k], whole_w.last[k]), k


def _one_worker_run(model_dir: str, extra: dict) -> dict:
    """A multi-task run in this process (a rank, or the single worker); dropout 0."""
    import os

    bb = tiny_backbone("bert", f"{model_dir}/{os.getpid()}")
    w = Weights()
    c = cfg(task="superglue/cb+superglue/rte", batch_size=4, seed=2, lr=5e-3, head_dropout=0.0,
            method_args={"prompt_length": 3, "prefix_dropout": 0.0}, **extra)
    result = train(c, backbone=bb, callbacks=(w,), progress=False)
    return {"losses": [h["train_loss"] for h in result["history"]], "dev": [h["dev_primary"] for h in result["history"]],
            "val": result["val"]["primary"], "weights": w.last, "workers": result["workers"],
            "seen": {t: r["examples_seen"] for t, r in result["tasks"].items()}}


def test_multitask_two_workers_equal_one_worker(tmp_path):
    """Data-parallel as a single-task run (tests/core/test_distributed.py): 2 gloo workers at
    global batch 4 follow one worker's losses and end in its weights and scores."""
    single = _one_worker_run(str(tmp_path / "m"), {})
    ranks = spawn(2, _one_worker_run, str(tmp_path / "m"), {})
    assert single["workers"] == 1
    for r in ranks:
        assert r["workers"] == 2 and r["seen"] == single["seen"]  # the same global batches
        assert r["losses"] == pytest.approx(single["losses"], rel=1e-5)
        assert r["dev"] == single["dev"] and r["val"] == single["val"]
        for k, w in single["weights"].items():
            torch.testing.assert_close(r["weights"][k], w, rtol=1e-4, atol=5e-5)
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in single["weights"])
