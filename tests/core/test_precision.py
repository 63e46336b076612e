"""Gradient accumulation and mixed precision in the training loop (``ptcore.precision``).

* ``grad_accum_steps = k``: k slices of each batch of B, one backward each, make the same
  update as the batch itself: the same weights after two epochs, for a prompt method and for
  fine-tuning, and for NER, whose loss averages over scored words (not examples); in the text
  formats (T5, decoder LMs) each example's targets stay in its slice, and the slices add up
  to the batch's loss and gradient.
* ``precision: bf16`` trains on the CPU (autocast), the loss falls, the weights stay fp32.
* ``fp16``: a step whose gradients overflow is skipped (weights untouched, scale halved),
  not a NaN failure; a whole run trains and records the precision that ran.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.precision import Amp, resolve_precision
from ptcore.train import prepare_data, split_batch, train


class Weights:
    def on_epoch_end(self, epoch, metrics, model, state):
        self.last = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        self.dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
        return False


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_backbone("bert", tmp_path_factory.mktemp("model"))  # dropout 0: slices see what the batch sees


def _cfg(task="superglue/cb", method="ptuning_v2", **kw) -> RunConfig:
    args = {"ptuning_v2": {"prompt_length": 3}, "finetune": {}}[method]
    base = dict(task=task, method=method, method_args=args, data_dir=str(FIXTURES), epochs=2, batch_size=4, seed=1,
                lr=5e-3, head_dropout=0.0)
    return RunConfig(**{**base, **kw})


def _train(backbone, cfg):
    w = Weights()
    result = train(cfg, backbone=backbone.copy(), callbacks=(w,), progress=False)
    return result, w


@pytest.mark.parametrize("task,method", [("superglue/cb", "ptuning_v2"), ("superglue/cb", "finetune"), ("ner/wnut17", "ptuning_v2")])
def test_accumulated_slices_equal_one_batch(backbone, task, method):
    whole, w1 = _train(backbone, _cfg(task, method))
    for k in (2, 4):
        acc, wk = _train(backbone, _cfg(task, method, grad_accum_steps=k))
        assert acc["history"][-1]["train_loss"] == pytest.approx(whole["history"][-1]["train_loss"], rel=1e-5)
        for name in w1.last:
            # float sums in another order; AdamW divides by sqrt(v), so a weight whose gradient
            # is ~0 can move by up to ~lr x that rounding: 1e-5 is 0.2% of lr = 5e-3
            torch.testing.assert_close(wk.last[name], w1.last[name], rtol=1e-4, atol=1e-5)


def test_split_batch_keeps_every_example_once(backbone):
    cfg = _cfg("ner/wnut17")
    data = prepare_data(cfg, backbone, 0)
    from ptcore.data import make_loader
    from ptcore.tasks import get_task
    from ptcore.tasks.kinds import get_kind

    kind = get_kind(get_task(cfg.task).kind)
    batch = next(iter(make_loader(data.features["train"], kind, 0, 5, shuffle=False)))
    parts = split_batch(batch, 3)
    assert [len(p["example_index"]) for p in parts] == [2, 1, 2] or sum(len(p["example_index"]) for p in parts) == 5
    assert torch.equal(torch.cat([p["example_index"] for p in parts]), batch["example_index"])
    assert torch.equal(torch.cat([p["labels"] for p in parts]), batch["labels"])
    assert sum(kind.loss_units(p) for p in parts) == kind.loss_units(batch) == int((batch["labels"] != -100).sum())


def test_bf16_autocast_trains_on_cpu(backbone):
    result, w = _train(backbone, _cfg(precision="bf16", epochs=6, lr=2e-2))
    losses = [h["train_loss"] for h in result["history"]]
    assert result["precision"] == "bf16" and result["skipped_steps"] == 0
    assert losses[-1] < losses[0], losses
    assert w.dtypes == {torch.float32}  # fp32 master weights


def test_auto_precision_is_fp32_on_cpu(backbone):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    result, _ = _train(backbone, _cfg(epochs=1))
    assert result["precision"] == "fp32"


def test_fp16_overflow_is_a_skipped_step_not_a_failure():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    amp = Amp("fp16", torch.device("cpu"))
    amp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # scaled gradients overflow fp16 and fp32
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with amp.autocast():
        loss = model(torch.randn(8, 4)).float().pow(2).mean()
    amp.backward(loss)
    assert amp.step(opt, list(model.parameters()), 1.0) is False
    assert amp.skipped == 1 and amp.scaler.get_scale() < 2.0**120
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing written
    # a sane scale: the next step is taken
    amp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    opt.zero_grad()
    with amp.autocast():
        loss = model(torch.randn(8, 4)).float().pow(2).mean()
    amp.backward(loss)
    assert amp.step(opt, list(model.parameters()), 1.0) is True
    assert not torch.equal(before["weight"], model.weight)


def test_fp16_run_trains_and_records_it(backbone):
    result, w = _train(backbone, _cfg(precision="fp16", epochs=2))
    assert result["precision"] == "fp16" and result["skipped_steps"] >= 0
    assert all(torch.isfinite(v).all() for v in w.last.values()) and w.dtypes == {torch.float32}


def test_split_batch_of_fewer_examples_than_slices_keeps_every_example():
    """The last batch of an epoch can hold fewer examples than grad_accum_steps x workers:
    one slice per example, none empty, none dropped."""
    batch = {"example_index": torch.arange(3), "input_ids": torch.arange(15).view(3, 5), "words": [[0], [1], [2]]}
    for k in (3, 4, 8):
        parts = split_batch(batch, k)
        assert [p["example_index"].tolist() for p in parts] == [[0], [1], [2]]
        assert [p["words"] for p in parts] == [[[0]], [[1]], [[2]]]


@pytest.mark.parametrize("family", ["t5", "llama"])
@pytest.mark.parametrize("task", ["superglue/cb", "qa/squad"])
def test_split_text_batches_add_up_to_the_batch(tmp_path, family, task):
    """Format text: a rank-classification batch holds one target per label (N*C rows: T5's
    labels and rows, a decoder's joined input_ids), a generation batch one per example.
    k slices keep each example's targets with it (T5's rows re-based to the slice), and,
    weighted by their loss units, give the batch's loss and gradient (the dpt preset
    accumulates 4 slices)."""
    from ptcore.backbones import load_backbone
    from ptcore.data import make_loader
    from ptcore.model import build_model
    from ptcore.tiny import write_tiny_model

    directory = write_tiny_model(tmp_path / family, family)
    config = json.loads((directory / "config.json").read_text())  # no dropout (T5's attention drops by config, not module)
    (directory / "config.json").write_text(json.dumps({**config, "dropout_rate": 0.0, "attention_dropout": 0.0}))
    cfg = RunConfig(task=task, method="prompt_tuning", method_args={"prompt_length": 2}, model=str(directory), format="text",
                    data_dir=str(FIXTURES), seed=0)  # fmt: skip
    bb = load_backbone(cfg.model)
    model = build_model(cfg, bb)
    model.train()
    data = prepare_data(cfg, bb, model.encoder.extra_tokens)
    batch = next(iter(make_loader(data.features["train"], model.kind, bb.tokenizer.pad_token_id, 5, shuffle=False)))
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(parts, weights):
        model.zero_grad()
        total = sum(model.kind.loss(model(p), p) * w for p, w in zip(parts, weights))
        total.backward()
        return total.detach(), [p.grad.clone() for p in params]

    whole, g1 = grads([batch], [1.0])
    for k in (2, 3, 5):
        parts = split_batch(batch, k)
        assert torch.equal(torch.cat([p["example_index"] for p in parts]), batch["example_index"])
        units = [model.kind.loss_units(p) for p in parts]
        assert sum(units) == model.kind.loss_units(batch)
        acc, gk = grads(parts, [u / sum(units) for u in units])
        torch.testing.assert_close(acc, whole, rtol=1e-5, atol=1e-6)
        for a, b in zip(gk, g1):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
