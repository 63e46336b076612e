"""ptcore.kernels: the fast CPU dropout and training attention, and the fused AdamW.

What must hold: the dropout keeps each element with probability 1 - p and scales the kept by
the inverse of that rate; its backward uses the forward's mask; with every element kept, the
``ptcore`` attention and a whole model in training mode give SDPA's logits and gradients
(fp32, 1e-5); evaluation is bit-identical to the reference kernels; ``install`` is
reversible; fused AdamW takes the for-loop implementation's steps.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

from tinymodels import tiny_backbone

import ptcore.kernels as K
from ptcore.config import RunConfig
from ptcore.model import build_model
from ptcore.train import make_optimizer

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keep_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_003)
    y = K.fast_dropout(x, p)
    kept = y != 0
    n = x.numel()
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sd
    p_used = round(p * 65536) / 65536
    assert torch.all(y[kept] == 1.0 / (1.0 - p_used))  # kept elements scaled by the inverse keep rate
    assert abs(y.mean().item() - 1.0) < 5 * sd / (1 - p)  # unbiased
    # every 16-bit lane of the 64-bit draws is used: the four interleaved quarters keep alike
    lanes = kept[: n - n % 4].view(-1, 4).float().mean(0)
    assert torch.all((lanes - (1 - p)).abs() < 5 * math.sqrt(p * (1 - p) / (n // 4)))


def test_dropout_draws_differ_and_follow_the_seed():
    x = torch.ones(4096)
    torch.manual_seed(1)
    a = K.fast_dropout(x, 0.3)
    b = K.fast_dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(K.fast_dropout(x, 0.3), a)
    assert not torch.equal(a, b)


def test_dropout_backward_uses_the_forward_mask():
    torch.manual_seed(0)
    x = (torch.rand(64, 33) + 0.5).requires_grad_()
    y = K.fast_dropout(x, 0.25)
    g = torch.randn_like(y)
    y.backward(g)
    keep = y.detach() != 0
    scale = 1.0 / (1.0 - round(0.25 * 65536) / 65536)
    assert torch.allclose(x.grad, torch.where(keep, g * scale, 0.0))


def test_dropout_off_is_identity():
    x = torch.randn(5, 7)
    assert K.fast_dropout(x, 0.1, training=False) is x
    assert K.fast_dropout(x, 0.0) is x
    m = K.FastDropout(0.1).eval()
    assert m(x) is x


def keep_everything(monkeypatch) -> list:
    """Masks that keep every element (scale 1): the fast path then computes the plain maths.
    Returns the list of drop rates it was asked for."""
    calls: list = []

    def keep(shape, p, device):
        calls.append(p)
        return torch.ones(shape, dtype=torch.bool, device=device), 1.0

    monkeypatch.setattr(K, "keep_mask", keep)
    return calls


def test_attention_equals_sdpa_when_nothing_is_dropped(monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    keep_everything(monkeypatch)
    torch.manual_seed(0)
    n, heads, t, s, d = 3, 2, 5, 8, 4
    q, k, v = (torch.randn(n, heads, t if i == 0 else s, d, requires_grad=True) for i in range(3))
    mask = torch.ones(n, 1, t, s, dtype=torch.bool)
    mask[1, :, :, 6:] = False
    mask[2, :, :, :2] = False
    module = nn.Module().train()
    module.is_causal = False
    out, _ = K.attention(module, q, k, v, mask, dropout=0.1, scaling=d**-0.5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    module.eval()
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=d**-0.5)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    assert torch.allclose(out, ref, **TOL)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, **TOL)


def _batch():
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3], [2, 15, 3, 0, 0, 0, 0], [2, 16, 17, 18, 3, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids), "label": torch.tensor([0, 2, 1])}


def _model(tmp_path, method, kernels, dropout=0.1):
    bb = tiny_backbone("bert", tmp_path / "tok", layers=3)
    bb.model.config.attention_probs_dropout_prob = dropout
    for m in bb.model.modules():
        if isinstance(m, nn.Dropout):
            m.p = dropout
        if hasattr(m, "dropout_prob"):
            m.dropout_prob = dropout
    method_args = {"prompt_length": 3, "prefix_dropout": dropout} if method == "ptuning_v2" else {}
    cfg = RunConfig(task="superglue/cb", method=method, method_args=method_args, kernels=kernels, head_dropout=dropout)
    return build_model(cfg, bb)


def _logits_and_grads(model, train: bool):
    model.train(train)
    model.zero_grad(set_to_none=True)
    logits = model(_batch())
    torch.nn.functional.cross_entropy(logits, _batch()["label"]).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["finetune", "ptuning_v2"])
def test_training_with_everything_kept_equals_the_plain_forward(tmp_path, monkeypatch, method):
    """Training mode through the fast dropout + ``ptcore`` attention (masks all-keep) against
    evaluation mode through transformers' SDPA: the same logits and gradients."""
    calls = keep_everything(monkeypatch)
    model = _model(tmp_path, method, "fast")
    assert model.encoder.backbone.config._attn_implementation == K.ATTENTION
    logits, grads = _logits_and_grads(model, train=True)
    # embeddings + 3 per layer (one in the attention) + head (+ the prefix dropout)
    assert len(calls) == 1 + 3 * 3 + 1 + (method == "ptuning_v2"), calls
    ref_logits, ref_grads = _logits_and_grads(model, train=False)
    assert torch.allclose(logits, ref_logits, **TOL)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        scale = ref_grads[name].abs().max().clamp(min=1e-3)
        assert torch.allclose(grads[name] / scale, ref_grads[name] / scale, **TOL), name


@pytest.mark.parametrize("method", ["finetune", "ptuning_v2"])
def test_evaluation_is_bit_identical_to_reference(tmp_path, method):
    fast = _model(tmp_path, method, "fast").eval()
    ref = _model(tmp_path, method, "reference").eval()
    assert ref.encoder.backbone.config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert torch.equal(fast(_batch()), ref(_batch()))


def test_install_is_reversible(tmp_path):
    model = _model(tmp_path, "ptuning_v2", "fast")
    kinds = lambda: {type(m) for m in model.modules() if isinstance(m, nn.Dropout)}  # noqa: E731
    assert kinds() == {K.FastDropout}
    K.install(model, "reference", model.encoder.backbone)
    assert kinds() == {nn.Dropout} and model.encoder.backbone.config._attn_implementation == "sdpa"
    K.install(model, "fast", model.encoder.backbone)
    K.install(model, "fast", model.encoder.backbone)  # idempotent
    assert kinds() == {K.FastDropout} and model.encoder.backbone.config._attn_implementation == K.ATTENTION


def test_reference_kernels_use_torch_dropout(tmp_path):
    model = _model(tmp_path, "ptuning_v2", "reference")
    assert all(type(m) is nn.Dropout for m in model.modules() if isinstance(m, nn.Dropout))


def test_fused_adamw_takes_the_reference_steps(tmp_path):
    """ptcore's optimizer (fused on the CPU) against torch's for-loop AdamW, same groups."""
    model = _model(tmp_path, "finetune", "fast", dropout=0.0)
    twin = copy.deepcopy(model)
    params, opt, _ = make_optimizer(model, 1e-3, 0.01, 0.0, 100)
    assert opt.defaults.get("fused") is True
    ref_opt = torch.optim.AdamW(
        [{"weight_decay": g["weight_decay"], "params": [dict(twin.named_parameters())[n] for n, p in model.named_parameters() if any(p is q for q in g["params"])]} for g in opt.param_groups],
        lr=1e-3, foreach=False, fused=False,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # the same gradients for both (a backward's ~1e-9 noise, e.g. on key biases, would be amplified by Adam)
        grads = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
        for m, o in ((model, opt), (twin, ref_opt)):
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
            o.step()
    for (n, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), n
