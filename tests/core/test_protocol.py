"""The evaluation protocol and the methods' contracts, each guarded by a test that fails on
the one-line change that would break it (README "Protocol" and "Methods").

Rules guarded (the docstring of every test names its rule):

* selection: the best epoch is chosen on **dev** (carved from the official train file),
  never on the reported split (``val`` / ``test``);
* reporting: the best epoch's weights are **restored** before ``val``/``test`` are
  evaluated, and those are evaluated exactly once, after the last epoch; dev once per epoch;
* evaluation runs in **eval mode** (no dropout);
* ``depth=k`` prompts the **top** k layers: the layers below compute what the plain backbone
  computes;
* dynamic prompting: the Gumbel **temperature** sets the softness of the selection and the
  annealed value reaches the sampler; the **pool** weights are a per-instance softmax over
  the pool;
* **mean pooling** counts real tokens only (padding never changes an example's output);
* P-Tuning v2's **reparameterization** is Linear-Tanh-Linear;
* the **dev split** comes from the official train file and never overlaps val/test;
* heads see **input-aligned** states: prompt positions are stripped before the head.

Everything runs on tiny random models (``tests/tinymodels.py``) and the fixture data, with
dropout > 0 where train vs. eval mode must make a difference.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import torch.nn as nn

import ptcore.methods.dynamic.model as dynamic_model
import ptcore.train as train_mod
from conftest import FIXTURES
from tinymodels import tiny_backbone, tiny_backbone_dropout

from ptcore.config import RunConfig
from ptcore.data import make_loader
from ptcore.methods.common import resolve_layers
from ptcore.methods.dynamic import DynamicConfig, DynamicEncoder
from ptcore.methods.dynamic.select import sample_one_hot, temperature
from ptcore.tasks import TASKS, get_task, load_splits
from ptcore.tasks.io import read_records, to_examples
from ptcore.model import build_model
from ptcore.train import prepare_data, train

H = 32  # hidden size of the tiny models
TOL = dict(rtol=1e-5, atol=1e-5)


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A hash of a trainable state (names and exact bytes): equal iff the weights are equal."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def manual_batch(rows: list[list[int]], width: Optional[int] = None, pair: bool = False) -> dict:
    """Right-padded tensors from token id lists ([PAD]=0 in the tiny vocabulary); with
    ``pair``, the second half of each row is segment 1."""
    width = width or max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        if pair:
            types[i, len(r) // 2 : len(r)] = 1
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": types}


# [CLS]=2 ... [SEP]=3 in tests/tinymodels.py's vocabulary
SHORT = [2, 10, 11, 12, 3]
LONG = [2, 13, 14, 15, 16, 17, 18, 19, 20, 3]


# ====================================================================== an instrumented training run

EPOCHS = 3
DEV_SCORE = {1: 0.2, 2: 0.9, 3: 0.5}  # dev prefers epoch 2 ...
REPORTED_SCORE = {1: 0.1, 2: 0.4, 3: 0.8}  # ... while val/test would prefer epoch 3, the last one


class LoggedLoader:
    """A loader that logs its split once per batch drawn."""

    def __init__(self, loader, split: str, log: list):
        self.loader, self.split, self.log = loader, split, log

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.log.append(self.split)
            yield batch


@dataclass
class Run:
    result: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)  # (split, epoch whose weights were evaluated) per evaluate()
    log: list = field(default_factory=list)  # a split name per batch drawn, ("epoch_end", e) per epoch
    forwards: list = field(default_factory=list)  # (phase, model.training, any submodule training) per forward
    snapshots: dict = field(default_factory=dict)  # epoch -> fingerprint of the trainable weights at its end
    batches: dict = field(default_factory=dict)  # split -> batches in one pass
    final: str = ""  # fingerprint of the model's trainable weights after train() returned
    checkpoint: str = ""  # fingerprint of the saved checkpoint
    model: Any = None


def instrumented_run(task: str, tmp: Path, monkeypatch) -> Run:
    """Three epochs of P-Tuning v2 (dropout 0.2 in the backbone, prefix and head) on a fixture
    task, with ``evaluate`` spied: it runs for real, then its primary score is replaced by a
    scripted one that depends on the split and on *which epoch's weights* it was given
    (recognized by their fingerprint, numbered in the order first seen): dev is best at
    epoch 2, val/test at epoch 3. Loaders log every batch drawn; the model logs its mode at
    every forward; a callback snapshots the weights at each epoch's end."""
    rec = Run()
    bb = tiny_backbone_dropout("bert", tmp / "model", dropout=0.2)
    cfg = RunConfig(
        task=task, method="ptuning_v2", method_args={"prompt_length": 3, "prefix_dropout": 0.2}, data_dir=str(FIXTURES),
        epochs=EPOCHS, batch_size=4, eval_batch_size=2, head_dropout=0.2, seed=0,
    )  # fmt: skip
    data = prepare_data(cfg, bb, 0)
    owner = {id(f): s for s, feats in data.features.items() for f in feats}  # feature dict -> its split
    phase = {"now": "train"}

    real_make_loader = train_mod.make_loader

    def logged_make_loader(features, kind, pad_id, batch_size, shuffle, seed=0, generator=None):
        loader = real_make_loader(features, kind, pad_id, batch_size, shuffle, seed, generator)
        split = owner[id(features[0])]
        rec.batches[split] = len(loader)
        return LoggedLoader(loader, split, rec.log)

    real_build = train_mod.build_model

    def spied_build(cfg, backbone):
        model = real_build(cfg, backbone)
        model.register_forward_pre_hook(
            lambda m, args: rec.forwards.append((phase["now"], m.training, any(x.training for x in m.modules())))
        )
        return model

    real_evaluate = train_mod.evaluate
    epoch_of = {}  # weights fingerprint -> epoch number (order first evaluated)

    def scripted_evaluate(model, loader, features, examples, spec, device, dist=None):
        split = next(s for s, exs in data.examples.items() if exs is examples)
        phase["now"] = split
        try:
            scores = dict(real_evaluate(model, loader, features, examples, spec, device, dist))
        finally:
            phase["now"] = "train"
        epoch = epoch_of.setdefault(fingerprint(model.trainable_state_dict()), len(epoch_of) + 1)
        rec.calls.append((split, epoch))
        scores[spec.primary] = scores["primary"] = (DEV_SCORE if split == "dev" else REPORTED_SCORE).get(epoch, -1.0)
        return scores

    class Snapshots:
        def on_epoch_end(self, epoch, metrics, model, state):
            rec.snapshots[epoch] = fingerprint(model.trainable_state_dict())
            rec.log.append(("epoch_end", epoch))
            rec.model = model
            return False

    monkeypatch.setattr(train_mod, "make_loader", logged_make_loader)
    monkeypatch.setattr(train_mod, "build_model", spied_build)
    monkeypatch.setattr(train_mod, "evaluate", scripted_evaluate)
    rec.result = train(cfg, backbone=bb, data=data, callbacks=(Snapshots(),), output=tmp / "out", progress=False)
    rec.final = fingerprint(rec.model.trainable_state_dict())
    from safetensors.torch import load_file

    rec.checkpoint = fingerprint(load_file(str(tmp / "out" / "checkpoint" / "trainable.safetensors")))
    return rec


RUN_TASKS = {"superglue/cb": "val", "ner/wnut17": "test"}  # task -> its reported split


@pytest.fixture(scope="module", params=list(RUN_TASKS))
def run(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        return request.param, instrumented_run(request.param, tmp_path_factory.mktemp("run"), mp)


def test_best_epoch_is_selected_on_dev_not_on_the_reported_split(run):
    """Selection rule: the best epoch is the dev-best one (2), not the val/test-best one (3)."""
    task, rec = run
    reported = RUN_TASKS[task]
    assert rec.result["epochs_run"] == EPOCHS
    assert rec.result["best_epoch"] == 2, rec.calls
    assert rec.result["dev"]["primary"] == DEV_SCORE[2]
    assert [h["dev_primary"] for h in rec.result["history"]] == [DEV_SCORE[e] for e in (1, 2, 3)]
    # the reported number is the reported split's score *of the dev-best weights*: neither the
    # best reported score (epoch 3) nor the last epoch's
    assert rec.result[reported]["primary"] == REPORTED_SCORE[2]


def test_reported_split_is_evaluated_on_the_restored_best_weights(run):
    """Reporting rule: the dev-best epoch's weights are restored before val/test are
    evaluated, and they are what the run leaves in the model and in the checkpoint."""
    task, rec = run
    reported = RUN_TASKS[task]
    assert len(set(rec.snapshots.values())) == EPOCHS, "every epoch must change the weights"
    best = rec.snapshots[rec.result["best_epoch"]]
    assert [epoch for split, epoch in rec.calls if split == reported] == [2]
    assert rec.final == best, "the model after train() holds the last epoch's weights, not the best epoch's"
    assert rec.checkpoint == best, "the checkpoint holds the last epoch's weights, not the best epoch's"
    assert rec.result["checkpoint_bytes"] > 0


def test_reported_split_untouched_until_training_ends_and_dev_once_per_epoch(run):
    """Protocol: dev is evaluated once per epoch, after that epoch's training; val/test are
    not touched (not one batch drawn) before the last epoch ends, then evaluated exactly
    once, after the best epoch was restored."""
    task, rec = run
    reported = RUN_TASKS[task]
    assert [s for s, _ in rec.calls] == ["dev"] * EPOCHS + [reported]
    assert [e for s, e in rec.calls if s == "dev"] == [1, 2, 3]  # each epoch's own weights
    # batches drawn, split by epoch ends
    log = rec.log
    ends = [i for i, x in enumerate(log) if isinstance(x, tuple)]
    assert [log[i][1] for i in ends] == [1, 2, 3]
    start = 0
    for end in ends:
        epoch = log[start:end]
        assert reported not in epoch and "test" not in epoch and "val" not in epoch, f"{reported} touched during training: {epoch}"
        n_train, n_dev = epoch.count("train"), epoch.count("dev")
        assert n_train == rec.batches["train"] and n_dev == rec.batches["dev"], epoch
        assert epoch == ["train"] * n_train + ["dev"] * n_dev, f"dev must follow the epoch's training: {epoch}"
        start = end + 1
    assert log[start:] == [reported] * rec.batches[reported], "the reported split must be read once, after training"


def test_evaluation_forwards_run_in_eval_mode(run):
    """Evaluation rule: every forward inside ``evaluate`` runs with every module in eval
    mode (dropout off), every training forward in train mode."""
    _, rec = run
    phases = {p for p, _, _ in rec.forwards}
    assert "train" in phases and len(phases) > 1, phases
    for phase, training, any_training in rec.forwards:
        if phase == "train":
            assert training, "a training step ran in eval mode"
        else:
            assert not any_training, f"{phase} evaluated with modules in train mode (dropout on)"


def test_evaluate_switches_to_eval_mode_itself(tmp_path):
    """Evaluation rule: ``evaluate`` puts the model in eval mode whatever mode it was handed:
    with dropout 0.5 everywhere, two evaluations give the same logits, equal to a forward in
    eval mode."""
    bb = tiny_backbone_dropout("bert", tmp_path, dropout=0.5)
    cfg = RunConfig(
        task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 3, "prefix_dropout": 0.5},
        data_dir=str(FIXTURES), head_dropout=0.5,
    )  # fmt: skip
    model = build_model(cfg, bb)
    data = prepare_data(cfg, bb, 0)
    spec = get_task(cfg.task)
    loader = make_loader(data.features["val"], model.kind, bb.tokenizer.pad_token_id, 3, shuffle=False)
    seen: list[torch.Tensor] = []
    decode = model.kind.decode
    model.kind.decode = lambda logits, batch: (seen.append(logits.clone()), decode(logits, batch))[1]
    runs = []
    for seed in (1, 2):
        model.train()  # as the training loop leaves it
        torch.manual_seed(seed)
        seen.clear()
        train_mod.evaluate(model, loader, data.features["val"], data.examples["val"], spec, torch.device("cpu"))
        runs.append(torch.cat(seen))
    model.eval()
    with torch.no_grad():
        ref = torch.cat([model(b) for b in loader])
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        noisy = torch.cat([model(b) for b in loader])
    assert not torch.allclose(noisy, ref, atol=1e-4), "dropout 0.5 should change train-mode logits"
    torch.testing.assert_close(runs[0], ref, **TOL)
    torch.testing.assert_close(runs[1], ref, **TOL)


# ====================================================================== depth = top k layers


def layer_outputs(bb, run) -> list[torch.Tensor]:
    """Each encoder layer's output hidden states (N,T,H) during ``run()``."""
    outs = {}
    hooks = [
        layer.register_forward_hook(lambda mod, args, out, i=i: outs.__setitem__(i, (out[0] if isinstance(out, tuple) else out).detach().clone()))
        for i, layer in enumerate(bb.model.encoder.layer)
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return [outs[i] for i in range(len(hooks))]


@pytest.mark.parametrize(
    "method,args",
    [
        ("ptuning_v2", {}),
        ("ptuning_v2", {"reparameterize": True, "prefix_hidden_size": 8}),
        ("dynamic", {"base": "deep", "pool_size": 2, "length": "task", "length_candidates": [2, 5]}),
    ],
    ids=["ptuning_v2", "ptuning_v2-reparam", "dynamic-deep"],
)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_depth_k_prefix_only_reaches_the_top_k_layers(tmp_path, method, args, k):
    """``depth=k`` prompts the top k layers: below them every layer's output equals the plain
    backbone's and does not move when the trainable prefix changes; each of the top k
    moves. (tests/core/test_equivalence.py's 'top2' case also catches a bottom-k depth, via
    its hand-written reference; this checks the rule itself, for every k.)"""
    n_layers = 4
    bb = tiny_backbone("bert", tmp_path, layers=n_layers)
    cfg = RunConfig(task="superglue/cb", method=method, method_args={"prompt_length": 5, "prefix_dropout": 0.0, "depth": k, **args})
    model = build_model(cfg, bb).eval()
    b = manual_batch([LONG, SHORT], pair=True)
    ids, mask, types = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    real = mask.bool()
    encode = lambda: model.encoder(ids, mask, types)  # noqa: E731
    before = layer_outputs(bb, encode)
    with torch.no_grad():
        plain = bb.model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True).hidden_states
        torch.manual_seed(3)
        for p in model.encoder.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # another prefix (and selectors)
    after = layer_outputs(bb, encode)
    lowest = n_layers - k
    for i in range(n_layers):
        if i < lowest:
            torch.testing.assert_close(before[i][real], plain[i + 1][real], **TOL, msg=lambda m: f"layer {i} (un-prompted): {m}")
            assert torch.equal(before[i], after[i]), f"the prefix reached un-prompted layer {i} (depth={k})"
        else:
            assert not torch.allclose(before[i][real], after[i][real], atol=1e-4), f"prompted layer {i} ignores the prefix (depth={k})"
    assert resolve_layers(k, n_layers) == list(range(lowest, n_layers))


# ====================================================================== dynamic: temperature


def soft_jacobian(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """J[c, j] = d y_c / d logits_j for a (C,) sample ``y`` of (C,) ``logits``."""
    rows = [torch.autograd.grad(y[c], logits, retain_graph=True, allow_unused=True)[0] for c in range(y.shape[0])]
    return torch.stack([torch.zeros_like(logits) if r is None else r.reshape(-1) for r in rows])


def assert_softness(y: torch.Tensor, jac: torch.Tensor, tau: float, expect: str) -> None:
    """Straight-through Gumbel-Softmax: the forward is one-hot; the gradient is that of the
    soft sample p = softmax((logits + g) / tau), i.e. ``J = (diag(p) - p p^T) / tau``: ~0 when
    p is near one-hot (tiny tau: saturated), ``tau * J = diag(1/C) - 1/C^2`` when p is near
    uniform (large tau)."""
    c = y.shape[0]
    assert torch.equal(y.detach(), torch.nn.functional.one_hot(y.detach().argmax(), c).to(y.dtype)), "forward must be one-hot"
    scaled = tau * jac
    if expect == "one-hot":
        assert jac.abs().max() < 1e-6, f"tau={tau}: soft sample not near one-hot:\n{jac}"
    else:
        uniform = torch.eye(c) / c - 1.0 / c**2
        assert torch.allclose(scaled, uniform, atol=2e-2), f"tau={tau}: soft sample not near uniform:\n{scaled}"


@pytest.mark.parametrize("tau,expect", [(1e-3, "one-hot"), (1e3, "uniform")])
def test_gumbel_softness_follows_the_temperature(tau, expect):
    """Dynamic prompting rule: the Gumbel-Softmax temperature sets the softness of the
    selection's gradient (near one-hot for a tiny tau, near uniform for a large one)."""
    logits = torch.tensor([0.0, 1.0, 2.0, 0.5], requires_grad=True)
    torch.manual_seed(0)
    y, index = sample_one_hot(logits.unsqueeze(0), tau, training=True)
    assert index.tolist() == [y.detach().argmax(-1).item()]
    assert_softness(y[0], soft_jacobian(y[0], logits), tau, expect)


@pytest.mark.parametrize("step,expect", [(0, "uniform"), (99, "one-hot")])
def test_annealed_temperature_reaches_the_encoder_selection(step, expect):
    """Dynamic prompting rule: ``on_train_step`` anneals tau (tau0=1000 -> tau_min=0.001) and
    the encoder's position and length choices are sampled at that tau."""
    torch.manual_seed(0)
    from transformers import BertConfig, BertModel

    from ptcore.backbones import backbone_from_model

    cfg = BertConfig(hidden_size=H, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    bb = backbone_from_model(BertModel(cfg), tokenizer=None)
    enc = DynamicEncoder(bb, DynamicConfig(prompt_length=4, position="task", length="task", tau0=1000.0, tau_min=0.001))
    enc.train()
    tau = enc.on_train_step(step, 100)["tau"]
    assert tau == pytest.approx(temperature(step, 100, 1000.0, 0.001, "exponential"))
    torch.manual_seed(0)
    ch = enc.choose(None, 1)
    assert_softness(ch.split_onehot[0], soft_jacobian(ch.split_onehot[0], enc.position_selector.logits), tau, expect)
    assert_softness(ch.length_onehot[0], soft_jacobian(ch.length_onehot[0], enc.length_selector.logits), tau, expect)


def test_training_loop_feeds_the_schedule_to_the_sampler(tmp_path, monkeypatch):
    """Dynamic prompting rule: during training every Gumbel sample is drawn at the scheduled
    temperature of its optimizer step (tau0 at step 0 down to tau_min at the last step);
    evaluation draws no sample."""
    bb = tiny_backbone("bert", tmp_path)
    args = {"prompt_length": 3, "position": "task", "tau0": 2.0, "tau_min": 0.1, "anneal": "linear"}
    cfg = RunConfig(task="superglue/cb", method="dynamic", method_args=args, data_dir=str(FIXTURES), epochs=2, batch_size=4, seed=0)
    seen = []
    real = dynamic_model.sample_one_hot

    def spy(logits, tau, training):
        seen.append((float(tau), training))
        return real(logits, tau, training)

    monkeypatch.setattr(dynamic_model, "sample_one_hot", spy)
    result = train(cfg, backbone=bb, progress=False)
    taus = [t for t, training in seen if training]
    total = len(taus)
    assert total == 2 * 2  # 8 training examples / batch 4, 2 epochs: one sample per step
    assert taus == pytest.approx([temperature(s, total, 2.0, 0.1, "linear") for s in range(total)])
    assert [h["tau"] for h in result["history"]] == pytest.approx([taus[1], taus[3]])  # logged: each epoch's last step


# ====================================================================== dynamic: pool weights


def dynamic_encoder(tmp_path, **kw) -> DynamicEncoder:
    """A dynamic encoder on the tiny BERT with non-trivial (random) selector and pool nets."""
    bb = tiny_backbone("bert", tmp_path)
    torch.manual_seed(5)
    enc = DynamicEncoder(bb, DynamicConfig(prompt_length=4, **kw))
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "selector" in name or "pool_net" in name:
                p.normal_(0.0, 1.0)
    return enc.eval()


def test_pool_weights_are_a_per_instance_softmax_over_the_pool(tmp_path):
    """Dynamic prompting rule: each instance's pool weights are softmax(Linear(its pooled
    input)) over the pool: they sum to 1 over the pool for each instance and do not depend on
    the other instances of the batch."""
    enc = dynamic_encoder(tmp_path, pool_size=3)
    torch.manual_seed(0)
    pooled = torch.randn(5, H)
    w = enc.choose(pooled, 5).pool_weights
    assert w.shape == (5, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(5), **TOL)
    ref = torch.softmax(enc.pool_net(pooled), dim=-1)
    torch.testing.assert_close(w, ref, **TOL)
    alone = enc.choose(pooled[:1], 1).pool_weights
    others = pooled.clone()
    others[1:] = torch.randn(4, H) * 3
    company = enc.choose(others, 5).pool_weights
    torch.testing.assert_close(alone[0], w[0], **TOL)
    torch.testing.assert_close(company[0], w[0], **TOL)
    assert not torch.allclose(w[0], w[1], atol=1e-3), "instances should get different mixtures"


@pytest.mark.parametrize("base", ["shallow", "deep"])
def test_instance_output_independent_of_its_batch(tmp_path, base):
    """Dynamic prompting rules (pool softmax per instance; mean pooling over real tokens): an
    instance's hidden states do not change when the rest of its batch changes, nor when it
    is padded to a longer batch."""
    kw = dict(pool_size=3, length="instance")
    if base == "shallow":
        kw["position"] = "instance"
    enc = dynamic_encoder(tmp_path, base=base, prefix_dropout=0.0, **kw)

    def states(rows):
        b = manual_batch(rows, pair=True)
        with torch.no_grad():
            return enc(b["input_ids"], b["attention_mask"], b["token_type_ids"])[0, : len(rows[0])]

    alone = states([SHORT])
    with_short = states([SHORT, [2, 21, 22, 23, 3], [2, 24, 25, 26, 3]])
    with_long = states([SHORT, LONG, [2, 27, 28, 3]])  # SHORT padded to LONG's length
    torch.testing.assert_close(with_short, alone, **TOL)
    torch.testing.assert_close(with_long, alone, **TOL)


# ====================================================================== mean pooling


def test_mean_pool_averages_real_tokens_only(tmp_path):
    """Pooling rule: 'mean' averages the real (mask=1) tokens; padding contributes nothing."""
    bb = tiny_backbone("bert", tmp_path)
    model = build_model(RunConfig(task="superglue/cb", method="finetune"), bb)
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, H)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    garbage = hidden.clone()
    garbage[0, 3:] = 1e3  # padding states: whatever the encoder left there
    pooled = model.pool(garbage, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :3].mean(0), **TOL)
    torch.testing.assert_close(pooled[1], hidden[1].mean(0), **TOL)


@pytest.mark.parametrize(
    "method,args",
    [
        ("finetune", {}),
        ("prompt_tuning", {"prompt_length": 4}),
        ("ptuning_v2", {"prompt_length": 4, "prefix_dropout": 0.0}),
        ("dynamic", {"prompt_length": 4, "pool_size": 2, "position": "instance"}),
    ],
)
def test_classification_logits_do_not_depend_on_padding(tmp_path, method, args):
    """Pooling rule: an example's logits are the same alone, padded longer, or batched with
    a longer example (mean pooling and the dynamic selector's pooled input count real
    tokens only)."""
    bb = tiny_backbone("bert", tmp_path)
    model = build_model(RunConfig(task="superglue/cb", method=method, method_args=args, head_dropout=0.0), bb).eval()
    if method == "dynamic":
        with torch.no_grad():
            for name, p in model.encoder.named_parameters():
                if "selector" in name or "pool_net" in name:
                    p.normal_(0.0, 1.0)
    with torch.no_grad():
        alone = model(manual_batch([SHORT], pair=True))[0]
        padded = model(manual_batch([SHORT], width=len(SHORT) + 6, pair=True))[0]
        batched = model(manual_batch([SHORT, LONG], pair=True))[0]
    torch.testing.assert_close(padded, alone, **TOL)
    torch.testing.assert_close(batched, alone, **TOL)


# ====================================================================== reparameterization


REPARAM = [
    ("ptuning_v2", {}),
    ("dynamic", {"base": "deep", "pool_size": 2}),
]


def reparam_model(directory: Path, method: str, args: dict, reparameterize: bool = True):
    bb = tiny_backbone("bert", directory, layers=3)
    method_args = {"prompt_length": 5, "prefix_dropout": 0.0, "depth": 2, "reparameterize": reparameterize, "prefix_hidden_size": 7, **args}
    return build_model(RunConfig(task="superglue/cb", method=method, method_args=method_args, head_dropout=0.0), bb).eval()


@pytest.mark.parametrize("method,args", REPARAM, ids=[m for m, _ in REPARAM])
def test_reparameterization_mlp_is_linear_tanh_linear(tmp_path, method, args):
    """P-Tuning v2 rule: the reparameterization MLP is Linear(H, hidden) - Tanh -
    Linear(hidden, layers*2*H)."""
    mlp = reparam_model(tmp_path, method, args).encoder.prefix_encoder.mlp
    assert [type(m) for m in mlp] == [nn.Linear, nn.Tanh, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features) == (H, 7)
    assert (mlp[2].in_features, mlp[2].out_features) == (7, 2 * 2 * H)  # 2 prompted layers x (key, value) x H


@pytest.mark.parametrize("method,args", REPARAM, ids=[m for m, _ in REPARAM])
def test_reparameterized_prefixes_equal_a_hand_computed_tanh_mlp(tmp_path, method, args):
    """P-Tuning v2 rule: the prefixes are tanh(tokens W1^T + b1) W2^T + b2, and the encoder
    with them equals the same encoder holding those prefixes as plain parameters."""
    model = reparam_model(tmp_path / "a", method, args)
    pe = model.encoder.prefix_encoder
    with torch.no_grad():
        torch.manual_seed(0)
        for p in pe.parameters():
            p.normal_(0.0, 1.0)  # large pre-activations: tanh differs from ReLU/GELU/identity/sigmoid
        first, second = [m for m in pe.mlp.modules() if isinstance(m, nn.Linear)]
        ref = torch.tanh(pe.tokens @ first.weight.T + first.bias) @ second.weight.T + second.bias
        torch.testing.assert_close(pe(), ref, **TOL)
        plain = reparam_model(tmp_path / "b", method, args, reparameterize=False)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("encoder.prefix_encoder")}, strict=False)
        plain.encoder.prefix_encoder.prefix.copy_(ref)
        b = manual_batch([LONG, SHORT], pair=True)
        torch.testing.assert_close(model(b), plain(b), **TOL)


# ====================================================================== the dev split


def file_examples(spec, role: str) -> list[dict]:
    return to_examples(read_records(FIXTURES / spec.local.path / spec.local.files[role], spec), spec)


def counts(examples: list[dict]) -> Counter:
    return Counter(json.dumps(ex, sort_keys=True, default=str) for ex in examples)


@pytest.mark.parametrize("task", sorted(TASKS.names()))
def test_dev_comes_from_the_official_train_file_and_never_overlaps_val(task):
    """Split rule: dev is carved from the official train file (or is the official dev file,
    NER), train and dev partition that file, val/test are the official files untouched,
    and dev never shares an example with val or test. Where no train file exists (SQuAD
    v1.1) train/dev/val are disjoint parts of the validation file, as data_notes says."""
    spec = get_task(task)
    roles = {r for r, name in spec.local.files.items() if (FIXTURES / spec.local.path / name).is_file()}
    splits, notes = load_splits(spec, FIXTURES)
    dev, train_split = counts(splits["dev"]), counts(splits["train"])
    if "train" in roles and "dev" in roles:  # NER: the official dev file
        assert dev == counts(file_examples(spec, "dev"))
        assert train_split == counts(file_examples(spec, "train"))
    elif "train" in roles:
        train_file = counts(file_examples(spec, "train"))
        if getattr(spec, "train_hook", None) is not None:  # ReCoRD: train queries with no gold candidate are dropped, and noted
            dropped = train_file - (train_split + dev)
            assert not (train_split + dev) - train_file, "train and dev must come from the official train file"
            assert all(json.loads(k)["label"] is None for k in dropped)
            assert not dropped or any("dropped" in n for n in notes), notes
        else:
            assert train_split + dev == train_file, "train and dev must partition the official train file"
        assert any("of the official train split" in n for n in notes), notes
    else:
        val_file = counts(file_examples(spec, "val"))
        assert train_split + dev + counts(splits["val"]) == val_file
        assert any("carved" in n for n in notes), notes
    if "val" in roles and "train" in roles:
        assert splits["val"] == file_examples(spec, "val"), "val must be the whole official validation file"
    if "test" in roles:
        assert splits["test"] == file_examples(spec, "test")
    assert dev and not (dev & train_split)
    for other in ("val", "test"):
        if other in splits:
            assert not (dev & counts(splits[other])), f"dev overlaps {other}"


def test_dev_split_is_fixed_and_disjoint_from_val_on_a_larger_file(tmp_path):
    """Split rule: on a 60-row train file, dev is 10% of it (6 rows), the same for every run
    seed, and shares no row with the official validation file."""
    d = tmp_path / "data" / "glue" / "SST-2"
    d.mkdir(parents=True)
    train_rows = [f"train sentence {i}\t{i % 2}" for i in range(60)]
    val_rows = [f"val sentence {i}\t{i % 2}" for i in range(12)]
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(train_rows) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(val_rows) + "\n")
    bb = tiny_backbone("bert", tmp_path / "model")
    devs = []
    for seed in (0, 7):
        cfg = RunConfig(task="glue/sst2", method="finetune", data_dir=str(tmp_path / "data"), seed=seed)
        data = prepare_data(cfg, bb, 0)
        devs.append([ex["text_a"] for ex in data.examples["dev"]])
        assert all(t.startswith("train ") for t in devs[-1]), devs[-1]
        assert len(devs[-1]) == 6 and len(data.examples["train"]) == 54 and len(data.examples["val"]) == 12
        assert not set(devs[-1]) & {ex["text_a"] for ex in data.examples["train"]}
    assert devs[0] == devs[1], "the dev split moved with the run seed"


# ====================================================================== heads see input-aligned states


def prompt_tuning_reference(enc, prompt: torch.Tensor, b: dict) -> torch.Tensor:
    """Shallow prompt by hand: run the backbone on ``[CLS] P x [SEP] [PAD]...`` (positions
    0..T+l-1, the prompt in [CLS]'s segment) and keep the input tokens' states. (N,T,H)"""
    ids, mask, types = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    n, t = ids.shape
    l = prompt.shape[0]
    words = enc.backbone.get_input_embeddings()(ids)
    embeds = torch.cat([words[:, :1], prompt.unsqueeze(0).expand(n, -1, -1), words[:, 1:]], 1)
    full_mask = torch.cat([mask[:, :1], torch.ones(n, l, dtype=mask.dtype), mask[:, 1:]], 1)
    full_types = torch.cat([types[:, :1], types[:, :1].expand(n, l), types[:, 1:]], 1)
    out = enc.backbone(inputs_embeds=embeds, attention_mask=full_mask, token_type_ids=full_types,
                       position_ids=torch.arange(t + l).expand(n, -1)).last_hidden_state  # fmt: skip
    return out[:, [0] + list(range(1 + l, t + l))]


SHALLOW = [
    ("prompt_tuning", {"prompt_length": 4}, lambda enc: enc.prompt),
    ("dynamic", {"prompt_length": 4}, lambda enc: enc.pool[0]),
]


@pytest.mark.parametrize("method,args,prompt_of", SHALLOW, ids=[m for m, _, _ in SHALLOW])
def test_shallow_prompt_encoder_returns_the_input_tokens_states(tmp_path, method, args, prompt_of):
    """Alignment rule: a shallow prompt method returns (N,T,H), position t being input token
    t's state in the prompted sequence (prompt positions stripped); changing only the
    prompt vectors changes those states."""
    bb = tiny_backbone("bert", tmp_path)
    enc = build_model(RunConfig(task="superglue/cb", method=method, method_args=args), bb).encoder.eval()
    b = manual_batch([LONG, SHORT], pair=True)
    real = b["attention_mask"].bool()
    with torch.no_grad():
        got = enc(b["input_ids"], b["attention_mask"], b["token_type_ids"])
        assert got.shape == (2, len(LONG), H)
        torch.testing.assert_close(got[real], prompt_tuning_reference(enc, prompt_of(enc), b)[real], **TOL)
        prompt_of(enc).add_(torch.randn_like(prompt_of(enc)))
        moved = enc(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert moved.shape == got.shape
    assert not torch.allclose(moved[real], got[real], atol=1e-4), "the prompt does not reach the input tokens' states"


@pytest.mark.parametrize("method", ["finetune", "prompt_tuning", "ptuning_v2", "dynamic"])
def test_token_head_reads_one_state_per_input_token(tmp_path, method):
    """Alignment rule (NER): the token head reads exactly the encoder's (B,T,H) input-aligned
    states, so its logits (B,T,C) line up with the (B,T) labels; for the shallow prompt
    methods these are the input tokens' states of the prompted sequence."""
    bb = tiny_backbone("bert", tmp_path)
    args = {} if method == "finetune" else {"prompt_length": 4}
    cfg = RunConfig(task="ner/wnut17", method=method, method_args=args, data_dir=str(FIXTURES), head_dropout=0.0)
    model = build_model(cfg, bb).eval()
    data = prepare_data(cfg, bb, model.encoder.extra_tokens)
    batch = next(iter(make_loader(data.features["train"], model.kind, bb.tokenizer.pad_token_id, 4, shuffle=False)))
    seen = []
    hook = model.head.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        logits = model(batch)
        states = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    hook.remove()
    b, t = batch["input_ids"].shape
    assert seen[0].shape == (b, t, H)
    assert logits.shape[:2] == batch["labels"].shape == (b, t)
    torch.testing.assert_close(seen[0], states, **TOL)
    assert torch.isfinite(model.kind.loss(logits, batch))
    shallow = {m: prompt_of for m, _, prompt_of in SHALLOW}
    if method in shallow:
        real = batch["attention_mask"].bool()
        with torch.no_grad():
            ref = prompt_tuning_reference(model.encoder, shallow[method](model.encoder), batch)
        torch.testing.assert_close(seen[0][real], ref[real], **TOL)


# ====================================================================== the same input for every method

SAME_INPUT = [
    ("finetune", {}),
    ("prompt_tuning", {"prompt_length": 16}),
    ("ptuning_v2", {"prompt_length": 16}),
    ("dynamic", {"prompt_length": 16}),
    ("dynamic", {"prompt_length": 16, "length": "instance"}),
]


def input_ids_of(tmp_path, method: str, args: dict, max_length: int):
    bb = tiny_backbone("bert", tmp_path)  # position table: 160 (158 usable)
    cfg = RunConfig(task="superglue/cb", method=method, method_args=args, data_dir=str(FIXTURES), max_length=max_length)
    model = build_model(cfg, bb)
    data = prepare_data(cfg, bb, model.encoder.extra_tokens)
    return {s: [f["input_ids"] for f in fs] for s, fs in data.features.items()}, data


@pytest.mark.parametrize("method,args", SAME_INPUT[1:], ids=[f"{m}-{len(a)}" for m, a in SAME_INPUT[1:]])
def test_every_method_sees_the_same_input_tokens(tmp_path, method, args):
    """Comparison rule: where the position table has room, a shallow prompt extends the
    sequence and never truncates the input: every method gets the token ids fine-tuning gets
    (here max_length 24 cuts most CB examples, and 24 + 16 fits the table of 158)."""
    ref, ref_data = input_ids_of(tmp_path / "ft", "finetune", {}, 24)
    got, data = input_ids_of(tmp_path / "m", method, args, 24)
    assert ref_data.truncated["val"] > 0, "the fixture must reach the limit for this test to mean anything"
    assert got == ref
    assert data.max_length == ref_data.max_length == 24
    assert not any("shallow prompt" in n for n in data.notes)


def test_a_shallow_prompt_that_cannot_fit_cuts_the_input_and_says_so(tmp_path):
    """Where input + prompt exceed the position table, the input is cut to what fits and the
    data notes say so (the report shows them)."""
    ref, ref_data = input_ids_of(tmp_path / "ft", "finetune", {}, 150)
    got, data = input_ids_of(tmp_path / "pt", "prompt_tuning", {"prompt_length": 16}, 150)
    assert ref_data.max_length == 150 and data.max_length == 158 - 16
    assert all(len(x) <= 142 for xs in got.values() for x in xs)
    assert any("142 tokens" in n and "16-token shallow prompt" in n for n in data.notes)
    assert not any("shallow prompt" in n for n in ref_data.notes)


# ====================================================================== P-Tuning v2 fidelity


def test_prefix_dropout_draws_one_mask_per_instance(tmp_path):
    """P-Tuning v2 rule: prefix dropout is drawn per instance (the reference expands the
    prefixes to the batch before its dropout): in training mode two identical inputs get
    different prefix keys/values; in eval mode the same ones."""
    bb = tiny_backbone("bert", tmp_path)
    model = build_model(RunConfig(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 6, "prefix_dropout": 0.5}), bb)
    seen = []
    model.encoder.deep.register_forward_pre_hook(lambda mod, args: seen.append((args[5].detach().clone(), args[6].detach().clone())))
    b = manual_batch([LONG, LONG], pair=True)
    torch.manual_seed(0)
    model.encoder.train()
    model.encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    keys, values = seen[-1]  # (N, layers, heads, l, d)
    assert not torch.equal(keys[0], keys[1]) and not torch.equal(values[0], values[1])
    dropped = (keys == 0).float().mean().item()
    assert 0.3 < dropped < 0.7, f"dropout rate {dropped:.2f}, expected ~0.5"
    model.encoder.eval()
    model.encoder(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    assert torch.equal(seen[-1][0][0], seen[-1][0][1])


@pytest.mark.parametrize("method,args", REPARAM, ids=[m for m, _ in REPARAM])
def test_reparameterization_tokens_start_as_the_reference_embedding(tmp_path, method, args):
    """P-Tuning v2 rule: the reparameterization's input tokens start as the reference's
    ``nn.Embedding``, N(0, 1), so the prefix slots differ at init (with N(0, 0.02²) they
    would be nearly identical: cosine ~1 after the MLP)."""
    bb = tiny_backbone("bert", tmp_path, layers=3)
    method_args = {"prompt_length": 8, "depth": 2, "reparameterize": True, "prefix_hidden_size": 64, **args}
    pe = build_model(RunConfig(task="superglue/cb", method=method, method_args=method_args), bb).encoder.prefix_encoder
    assert 0.8 < pe.tokens.std().item() < 1.2
    with torch.no_grad():
        slots = torch.nn.functional.normalize(pe()[0], dim=-1)  # (l, layers*2*H)
    cos = slots @ slots.T
    off_diagonal = cos[~torch.eye(len(cos), dtype=torch.bool)].mean().item()
    assert off_diagonal < 0.8, f"prefix slots nearly identical at init (mean cosine {off_diagonal:.2f})"
