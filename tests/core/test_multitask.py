"""Multi-task runs: task mixing, one head per task, per-task reports, MPT-2 initialization."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import ptcore.multitask as mt
from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.checkpoint import load_init
from ptcore.config import make_run_config
from ptcore.errors import ConfigError
from ptcore.config import task_key
from ptcore.multitask import mixing_weights, task_schedule
from ptcore.train import build_model, train

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
    drawn = Counter(task_schedule(weights, 20000, torch.Generator().manual_seed(0)))
    for t, p in weights.items():
        assert drawn[t] / 20000 == pytest.approx(p, abs=0.01)
    # seeded: the same schedule again
    assert task_schedule(weights, 50, torch.Generator().manual_seed(1)) == task_schedule(weights, 50, torch.Generator().manual_seed(1))


def test_each_head_sees_only_its_own_task(tmp_path, monkeypatch):
    bb = tiny_backbone("bert", tmp_path / "m")
    drawn: list[tuple[str, list]] = []  # (task whose loader gave the batch, its input ids)
    ran: list[tuple[str, int]] = []  # (head that ran, rows it saw)
    real_next = mt.Cycle.next

    def spy_next(self):
        batch = real_next(self)
        drawn.append((self.task, batch["input_ids"].tolist()))
        return batch

    monkeypatch.setattr(mt.Cycle, "next", spy_next)
    real_build = mt.build_multitask_model

    def build(c, backbone):
        model = real_build(c, backbone)
        for t in model.tasks:
            model.heads[task_key(t)].register_forward_hook(lambda m, a, o, t=t: ran.append((t, a[0].shape[0])) if m.training else None)
        return model

    monkeypatch.setattr(mt, "build_multitask_model", build)
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


def test_multitask_refuses_resume_and_duplicate_tasks(tmp_path):
    with pytest.raises(ConfigError, match="listed twice"):
        cfg(task="superglue/cb+superglue/cb")
    with pytest.raises(ConfigError, match="cannot resume"):
        train(cfg(), backbone=tiny_backbone("bert", tmp_path / "m"), resume=tmp_path, progress=False)
