"""The run's optimizer and schedule settings (``optimizer``, ``lr_schedule``, ``warmup_steps``):

* ``optimizer: adafactor`` is transformers' Adafactor at the DP reference's settings
  (``Adafactor(params, lr, relative_step=False, scale_parameter=False, warmup_init=False)``),
  with the same two parameter groups as AdamW (weight decay on weights only);
* ``lr_schedule: constant`` is transformers' ``get_constant_schedule_with_warmup``, ``linear``
  (the default) the linear warmup and decay every earlier run used;
* ``warmup_steps`` replaces ``warmup_ratio``;
* the defaults hash as before (earlier runs keep their config hashes);
* an Adafactor run trains end to end through ``ptcore.train.train`` and resumes exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from transformers import get_constant_schedule_with_warmup
from transformers.optimization import Adafactor

from conftest import FIXTURES
from tinymodels import SaveAndStop, Weights, tiny_backbone_dropout

from ptcore.config import HASH_ONLY_IF_SET, RunConfig, apply_overrides, make_run_config
from ptcore.errors import ConfigError
from ptcore.train import make_optimizer, prepare_data, train
from ptcore.trainstate import has_train_state

REFERENCE = {"relative_step": False, "scale_parameter": False, "warmup_init": False}  # the DP reference's Adafactor


class Small(nn.Module):
    """Weights (2-D: Adafactor's factored second moment), biases and a LayerNorm (1-D: its
    unfactored one, and no weight decay)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 5)
        self.LayerNorm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        with torch.no_grad():  # LayerNorm away from its (1, 0) start, so decay on it would show
            self.LayerNorm.weight.uniform_(0.5, 1.5)
            self.LayerNorm.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.frozen(self.out(torch.tanh(self.LayerNorm(self.proj(x)))))


def _steps(model: nn.Module, optimizer, scheduler=None, n: int = 3) -> dict[str, torch.Tensor]:
    """``n`` optimizer steps on fixed batches (the same gradients for every model copy)."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _lrs(scheduler, optimizer, n: int) -> list[float]:
    """The lr each of the first ``n`` optimizer steps uses."""
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


# ====================================================================== the optimizer


def test_adafactor_is_the_reference_adafactor_and_not_adamw():
    """No weight decay: make_optimizer's Adafactor steps exactly as the DP reference's
    ``Adafactor(params, lr=0.3, relative_step=False, scale_parameter=False, warmup_init=False)``;
    AdamW's steps go elsewhere."""
    lr = 0.3
    ours, ref, adamw = Small(), Small(), Small()
    _, opt, sched = make_optimizer(ours, lr, 0.0, 0.0, 100, optimizer="adafactor", lr_schedule="constant")
    assert isinstance(opt, Adafactor)
    got = _steps(ours, opt, sched)
    want = _steps(ref, Adafactor([p for p in ref.parameters() if p.requires_grad], lr=lr, **REFERENCE))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    _, opt_w, sched_w = make_optimizer(adamw, lr, 0.0, 0.0, 100, lr_schedule="constant")
    assert isinstance(opt_w, torch.optim.AdamW)
    other = _steps(adamw, opt_w, sched_w)
    assert not torch.allclose(other["proj.weight"], got["proj.weight"])
    assert torch.equal(other["frozen.weight"], got["frozen.weight"])  # frozen stays frozen under both


def test_adafactor_decays_weights_but_not_biases_or_layernorm():
    """With weight decay: the same two parameter groups as AdamW, weight_decay per group, as a
    hand-built reference Adafactor over those groups steps."""
    lr, wd = 0.3, 0.1
    ours, ref, plain = Small(), Small(), Small()
    _, opt, _ = make_optimizer(ours, lr, wd, 0.0, 100, optimizer="adafactor")
    assert [g["weight_decay"] for g in opt.param_groups] == [wd, 0.0]
    assert all(g[k] == v for g in opt.param_groups for k, v in REFERENCE.items())
    got = _steps(ours, opt)
    named = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    decay = {"proj.weight", "out.weight"}
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": wd},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    want = _steps(ref, Adafactor(groups, lr=lr, **REFERENCE))
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # and decay did something to the weights only: one step (same gradients) against the same
    # optimizer without decay (later steps' gradients differ, once the weights do)
    once = Small()
    _, opt1, _ = make_optimizer(once, lr, wd, 0.0, 100, optimizer="adafactor")
    got = _steps(once, opt1, n=1)
    _, opt0, _ = make_optimizer(plain, lr, 0.0, 0.0, 100, optimizer="adafactor")
    none = _steps(plain, opt0, n=1)
    for k in ("proj.weight", "out.weight"):
        assert not torch.equal(got[k], none[k]), k
    for k in ("proj.bias", "out.bias", "LayerNorm.weight", "LayerNorm.bias"):
        assert torch.equal(got[k], none[k]), k


def test_adafactor_state_survives_a_state_dict_round_trip():
    """What ptcore.trainstate saves (the optimizer's state_dict, its 0-d RMS and int step) loads
    into a fresh Adafactor, which then steps as the original does."""
    a, b = Small(), Small()
    _, opt_a, _ = make_optimizer(a, 0.3, 0.1, 0.0, 100, optimizer="adafactor")
    _steps(a, opt_a, n=2)
    b.load_state_dict(a.state_dict())
    _, opt_b, _ = make_optimizer(b, 0.3, 0.1, 0.0, 100, optimizer="adafactor")
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    wa, wb = _steps(a, opt_a, n=2), _steps(b, opt_b, n=2)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ====================================================================== the schedule


def test_constant_schedule_warms_up_then_holds_the_peak():
    """warmup_steps=3: the lr of optimizer step k is k/3 of the peak for k < 3, then the peak
    throughout (transformers' semantics: step 0 runs at lr 0, as the linear schedule's does)."""
    lr = 0.3
    model = Small()
    _, opt, sched = make_optimizer(model, lr, 0.0, 0.0, 10, optimizer="adafactor", lr_schedule="constant", warmup_steps=3)
    got = _lrs(sched, opt, 10)
    assert got == pytest.approx([0.0, lr / 3, 2 * lr / 3] + [lr] * 7)
    ref_opt = torch.optim.SGD(Small().parameters(), lr=lr)
    assert got == _lrs(get_constant_schedule_with_warmup(ref_opt, num_warmup_steps=3), ref_opt, 10)


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_linear_schedule_is_as_before(optimizer):
    """The default (and lr_schedule=linear): w = int(warmup_ratio x T) steps of warmup, then
    linear decay to 0 at T: lr x k / w, then lr x (T - k) / (T - w)."""
    lr, total, ratio = 0.1, 10, 0.3
    warm = int(ratio * total)
    want = [lr * k / warm if k < warm else lr * (total - k) / (total - warm) for k in range(total)]
    _, opt, sched = make_optimizer(Small(), lr, 0.01, ratio, total, optimizer=optimizer)  # positional, as callers pass it
    assert _lrs(sched, opt, total) == pytest.approx(want)
    _, opt, sched = make_optimizer(Small(), lr, 0.01, ratio, total, optimizer=optimizer, lr_schedule="linear")
    assert _lrs(sched, opt, total) == pytest.approx(want)


@pytest.mark.parametrize("warmup_steps", [0, 2, 5])
def test_warmup_steps_replace_warmup_ratio(warmup_steps):
    """warmup_steps given: that many warmup steps whatever warmup_ratio says (0 included)."""
    lr, total = 0.1, 10
    w = warmup_steps
    want = [lr * k / w if k < w else lr * (total - k) / (total - w) for k in range(total)]
    _, opt, sched = make_optimizer(Small(), lr, 0.0, 0.5, total, warmup_steps=warmup_steps)
    assert _lrs(sched, opt, total) == pytest.approx(want)
    want_c = [lr * k / w if k < w else lr for k in range(total)]
    _, opt, sched = make_optimizer(Small(), lr, 0.0, 0.5, total, lr_schedule="constant", warmup_steps=warmup_steps)
    assert _lrs(sched, opt, total) == pytest.approx(want_c)


# ====================================================================== the config

BASE = {"task": "superglue/cb", "method": "ptuning_v2", "method_args": {"prompt_length": 4}}


def test_defaults_hash_as_before():
    """A config without the new settings, one with them at their defaults, and the hash this
    config had before they existed (tests/core/test_config.py) are one; a setting away from
    its default changes the hash."""
    before = make_run_config(dict(BASE)).config_hash()
    assert before == "4dbf7c734425"
    at_default = make_run_config({**BASE, "optimizer": "adamw", "lr_schedule": "linear", "warmup_steps": None})
    assert at_default.config_hash() == before
    assert {k: HASH_ONLY_IF_SET[k] for k in ("optimizer", "lr_schedule", "warmup_steps")} == {
        k: RunConfig.model_fields[k].default for k in ("optimizer", "lr_schedule", "warmup_steps")}
    changed = [make_run_config({**BASE, **kw}).config_hash()
               for kw in ({"optimizer": "adafactor"}, {"lr_schedule": "constant"}, {"warmup_steps": 500}, {"warmup_steps": 0})]
    assert len({before, *changed}) == 5


def test_an_unknown_optimizer_is_one_line():
    values = apply_overrides(dict(BASE), ["optimizer=sgd"])
    with pytest.raises(ConfigError, match="optimizer") as e:
        make_run_config(values)
    assert "\n" not in str(e.value) and "adafactor" in str(e.value)
    with pytest.raises(ConfigError, match="lr_schedule"):
        make_run_config(apply_overrides(dict(BASE), ["lr_schedule=cosine"]))
    cfg = make_run_config(apply_overrides(dict(BASE), ["optimizer=adafactor", "lr_schedule=constant", "warmup_steps=500"]))
    assert (cfg.optimizer, cfg.lr_schedule, cfg.warmup_steps) == ("adafactor", "constant", 500)


def test_warmup_steps_with_a_warmup_ratio_is_refused():
    with pytest.raises(ConfigError, match="warmup_steps.*warmup_ratio.*keep one") as e:
        make_run_config({**BASE, "warmup_steps": 500, "warmup_ratio": 0.1})
    assert "\n" not in str(e.value)
    make_run_config({**BASE, "warmup_steps": 500})  # warmup_ratio at its default: fine
    make_run_config({**BASE, "warmup_ratio": 0.1})


# ====================================================================== end to end

EPOCHS = 3


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone_dropout("bert", tmp_path_factory.mktemp("model"))


def _cfg(**kw) -> RunConfig:
    values = dict(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 3}, data_dir=str(FIXTURES),
                  epochs=EPOCHS, batch_size=4, seed=3, lr=0.3, optimizer="adafactor", lr_schedule="constant", warmup_steps=2)
    values.update(kw)
    return RunConfig(**values)


class Seen:
    """A training callback: after each epoch, the optimizer's class, the steps taken and the lr
    the next step would use."""

    def __init__(self):
        self.epochs: list[tuple[type, int, float]] = []

    def on_epoch_end(self, epoch, metrics, model, state):
        self.epochs.append((type(state.optimizer), state.loop.step, state.scheduler.get_last_lr()[0]))
        return False


def test_adafactor_run_trains_and_resumes_exactly(backbone, tmp_path):
    """optimizer=adafactor, lr_schedule=constant: the run trains with Adafactor (not AdamW: the
    weights end elsewhere), and a run stopped after epoch 1 and resumed from its saved state
    ends bit for bit where the uninterrupted run does."""
    cfg = _cfg()
    data = prepare_data(cfg, backbone, 0)
    whole_w, seen = Weights(), Seen()
    whole = train(cfg, backbone=backbone.copy(), data=data, callbacks=(whole_w, seen), progress=False)
    assert whole["epochs_run"] == EPOCHS and whole["config"]["optimizer"] == "adafactor"
    assert {opt for opt, _, _ in seen.epochs} == {Adafactor}

    state_dir = tmp_path / "state"
    first = train(cfg, backbone=backbone.copy(), data=data, callbacks=(SaveAndStop(1, state_dir),), progress=False)
    assert first["epochs_run"] == 1 and has_train_state(state_dir)
    rest_w = Weights()
    rest = train(cfg, backbone=backbone.copy(), data=data, callbacks=(rest_w,), progress=False, resume=state_dir)
    assert rest["resumed_at"] == [1]
    assert rest["history"] == whole["history"]
    assert set(rest_w.last) == set(whole_w.last)
    for k in whole_w.last:
        assert torch.equal(rest_w.last[k], whole_w.last[k]), k

    adamw_w = Weights()
    train(_cfg(optimizer="adamw"), backbone=backbone.copy(), data=data, callbacks=(adamw_w,), progress=False)
    assert any(not torch.allclose(adamw_w.last[k], whole_w.last[k]) for k in whole_w.last)


@pytest.mark.parametrize("lr_schedule", ["linear", "constant"])
def test_schedule_settings_reach_train(backbone, lr_schedule):
    """In a run: warmup_steps=W warmup steps (not warmup_ratio's), then the lr_schedule: after n
    of T steps the lr is lr x n / W in warmup; then the peak (constant) or lr x (T - n) / (T - W)."""
    lr, w = 0.3, 3
    seen = Seen()
    train(_cfg(lr=lr, lr_schedule=lr_schedule, warmup_steps=w), backbone=backbone.copy(), callbacks=(seen,), progress=False)
    total = seen.epochs[-1][1]
    assert total == 2 * EPOCHS and seen.epochs[0][1] < w < total  # the fixture's CB: 2 steps an epoch
    for _, n, got in seen.epochs:
        want = lr * n / w if n < w else (lr if lr_schedule == "constant" else lr * (total - n) / (total - w))
        assert got == pytest.approx(want), (n, got)
