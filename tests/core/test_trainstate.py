"""A run stopped at an epoch boundary and continued from its saved state (``train(resume=)``)
ends exactly where the uninterrupted run ends: same epoch history, same weights, same best
epoch. This is what lets a Ray Train worker that dies mid-trial be retried without repeating
or losing an epoch (``orchestrator.execution.trial``).

Dropout is on (the tiny backbone with dropout 0.3) and the dynamic method samples Gumbel
noise, so every random stream the loop reads matters: forget one and the histories differ."""

from __future__ import annotations

import pytest
import torch

from conftest import FIXTURES
from tinymodels import SaveAndStop, Weights, tiny_backbone_dropout

from ptcore.config import RunConfig
from ptcore.errors import DataError
from ptcore.train import prepare_data, train
from ptcore.trainstate import has_train_state

EPOCHS = 3
METHODS = {
    "finetune": {},
    "ptuning_v2": {"prompt_length": 3},
    "dynamic": {"prompt_length": 3, "pool_size": 2},
}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone_dropout("bert", tmp_path_factory.mktemp("model"))


def _cfg(method: str, **kw) -> RunConfig:
    return RunConfig(task="superglue/cb", method=method, method_args=METHODS[method], data_dir=str(FIXTURES),
                     epochs=EPOCHS, batch_size=4, seed=3, lr=1e-2, warmup_ratio=0.3, **kw)


def _strip(history):
    return [{k: v for k, v in rec.items()} for rec in history]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("at", [1, 2])
def test_resumed_run_equals_uninterrupted_run(backbone, tmp_path, method, at):
    cfg = _cfg(method)
    data = prepare_data(cfg, backbone, 0)
    whole_w = Weights()
    whole = train(cfg, backbone=backbone.copy(), data=data, callbacks=(whole_w,), progress=False)

    state_dir = tmp_path / "state"
    first = train(cfg, backbone=backbone.copy(), data=data, callbacks=(SaveAndStop(at, state_dir),), progress=False)
    assert first["epochs_run"] == at and has_train_state(state_dir)
    rest_w = Weights()
    rest = train(cfg, backbone=backbone.copy(), data=data, callbacks=(rest_w,), progress=False, resume=state_dir)

    assert rest["resumed_at"] == [at] and whole["resumed_at"] == []
    assert [r["epoch"] for r in rest["history"]] == list(range(1, EPOCHS + 1))  # none repeated, none missing
    assert _strip(rest["history"]) == _strip(whole["history"])  # bit for bit: losses, lr, dev scores, temperatures
    assert rest["best_epoch"] == whole["best_epoch"] and rest["dev"]["primary"] == whole["dev"]["primary"]
    assert rest["timing"]["train_tokens"] == whole["timing"]["train_tokens"]
    assert set(rest_w.last) == set(whole_w.last)
    for k in whole_w.last:
        assert torch.equal(rest_w.last[k], whole_w.last[k]), k


def test_state_of_another_configuration_is_refused(backbone, tmp_path):
    cfg = _cfg("ptuning_v2")
    train(cfg, backbone=backbone.copy(), callbacks=(SaveAndStop(1, tmp_path / "s"),), progress=False)
    other = _cfg("ptuning_v2", weight_decay=0.5)
    with pytest.raises(DataError, match="another configuration"):
        train(other, backbone=backbone.copy(), progress=False, resume=tmp_path / "s")
    with pytest.raises(DataError, match="no training state"):
        train(cfg, backbone=backbone.copy(), progress=False, resume=tmp_path / "nothing")


def test_a_finished_run_resumed_trains_no_more(backbone, tmp_path):
    """A state saved after the last epoch: resuming only restores the best epoch and reports."""
    cfg = _cfg("ptuning_v2")
    whole = train(cfg, backbone=backbone.copy(), callbacks=(SaveAndStop(EPOCHS, tmp_path / "s"),), progress=False)
    again = train(cfg, backbone=backbone.copy(), progress=False, resume=tmp_path / "s")
    assert again["history"] == whole["history"] and again["epochs_run"] == EPOCHS
    assert again["dev"]["primary"] == whole["dev"]["primary"] and again["val"]["primary"] == whole["val"]["primary"]
