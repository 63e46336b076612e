"""Deep prefixes against a hand-written reference: logits and every trainable gradient.

The reference runs the backbone layer by layer with its own weights and a plain softmax
attention: a prompted layer attends over ``[prefix; tokens]`` (prefix slots hidden where the
prefix mask is 0), an un-prompted layer over the tokens only, exactly as a plain encoder
layer. Prefix layout (fixed by the checkpoints): the prefix encoder's output
``(N, l, P*2*H)`` is, per slot, P prompted layers (bottom first) x (key, value) x heads x
head_dim. Nothing here goes through ``DeepPrefix``, ``split_kv``, the KV cache or the
transformers mask code, so any change to those has to keep these numbers.

Tolerance: fp32, ``atol=1e-5`` (and ``rtol=1e-5``) on the logits, and on each gradient
divided by its reference's largest entry, floored at 1e-3 (the prefix gradients of these tiny
random models are ~1e-4..1e-3, so a plain ``atol=1e-5`` would hardly constrain them, while
entries of ~1e-10 are rounding noise); dropout 0 everywhere.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.methods.dynamic.select import mask_tap
from ptcore.model import TaskModel
from ptcore.model import build_model

LAYERS = 4
TOL = dict(rtol=1e-5, atol=1e-5)


def batch(family: str) -> dict:
    """Three inputs, two of them padded; BERT gets a second segment."""
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 3], [2, 15, 3, 0, 0, 0, 0], [2, 16, 17, 18, 3, 0, 0]])
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    if family == "bert":
        types[0, 4:] = 1
        types[2, 3:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "label": torch.tensor([0, 2, 1])}


# ---------------------------------------------------------------- the reference


def ref_layer(layer, x, mask, prefix=None, prefix_mask=None):
    """One BERT/RoBERTa encoder layer by hand. x (N,T,H), mask (N,T); prefix = (keys, values)
    each (N,heads,l,d) with prefix_mask (N,l), or None: no prefix columns at all."""
    att = layer.attention.self
    n, t, h = x.shape
    heads = att.num_attention_heads
    d = h // heads
    split = lambda y: y.view(n, t, heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = split(att.query(x)), split(att.key(x)), split(att.value(x))
    cols = mask
    if prefix is not None:
        k, v = torch.cat([prefix[0], k], 2), torch.cat([prefix[1], v], 2)
        cols = torch.cat([prefix_mask.to(mask.dtype), mask], 1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)  # (N,heads,T,cols)
    scores = scores.masked_fill(cols[:, None, None, :] == 0, float("-inf"))
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, h)
    a = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
    f = layer.output.dense(layer.intermediate.intermediate_act_fn(layer.intermediate.dense(a)))
    return layer.output.LayerNorm(f + a)


def ref_prefix(flat, j: int, which: int, n_prompted: int, heads: int):
    """Prompted layer j's keys (which=0) or values (1): (N,l,P*2*H) -> (N,heads,l,d)."""
    n, l, _ = flat.shape
    return flat.view(n, l, n_prompted, 2, heads, -1)[:, :, j, which].transpose(1, 2)


def ref_encode(enc, ids, mask, types, prompted, flat=None, prefix_mask=None):
    """The whole encoder by hand: embeddings with positions 0..T-1 (+ RoBERTa's offset), then
    every layer, prompted ones (``prompted``: bottom-up layer indices) with their prefix."""
    bb = enc.backbone
    n, t = ids.shape
    offset = bb.config.pad_token_id + 1 if bb.config.model_type == "roberta" else 0
    pos = (torch.arange(t) + offset).expand(n, t)
    x = bb.embeddings(input_ids=ids, token_type_ids=types, position_ids=pos)
    heads = bb.config.num_attention_heads
    for i, layer in enumerate(bb.encoder.layer):
        if flat is not None and i in prompted:
            j = prompted.index(i)
            pm = prefix_mask if prefix_mask is not None else torch.ones(n, flat.shape[1], dtype=torch.long)
            kv = tuple(ref_prefix(flat, j, which, len(prompted), heads) for which in (0, 1))
            x = ref_layer(layer, x, mask, kv, pm)
        else:
            x = ref_layer(layer, x, mask)
    return x  # (N,T,H)


class RefPTuningV2(torch.nn.Module):
    """P-Tuning v2 by hand, sharing the parameters of ``enc``."""

    def __init__(self, enc, prompted):
        super().__init__()
        self.enc, self.prompted = enc, prompted

    def forward(self, ids, mask, types):
        flat = self.enc.prefix_encoder().expand(ids.shape[0], -1, -1)  # (N,l,P*2*H)
        return ref_encode(self.enc, ids, mask, self.enc.token_types(types, ids), self.prompted, flat)


class RefDynamicDeep(torch.nn.Module):
    """Deep dynamic prompting by hand: the method's own choice code (selectors, pool mix,
    length tap), the prefix path and the attention by hand."""

    def __init__(self, enc, prompted):
        super().__init__()
        self.enc, self.prompted = enc, prompted

    def forward(self, ids, mask, types):
        enc = self.enc
        types = enc.token_types(types, ids)
        pooled = None
        if enc.needs_pooled:
            with torch.no_grad():
                h = ref_encode(enc, ids, mask, types, self.prompted)
                m = mask.unsqueeze(-1).float()
                pooled = (h * m).sum(1) / m.sum(1)
        ch = self.last = enc.choose(pooled, ids.shape[0])
        flat = enc._mix(enc.prefix_encoder(), ch, ids.shape[0])
        if ch.soft_mask is not None:
            flat = mask_tap(flat, ch.soft_mask)
        return ref_encode(enc, ids, mask, types, self.prompted, flat, ch.prompt_mask)


# ---------------------------------------------------------------- the comparison


def logits_and_grads(model, batch, params, seed=0):
    """Logits and {name: grad} of ``params`` (shared by both models) for a cross-entropy loss."""
    for p in params.values():
        p.grad = None
    torch.manual_seed(seed)  # Gumbel noise in training mode: the same draws for both
    logits = model(batch)
    F.cross_entropy(logits, batch["label"]).backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
    return logits.detach(), grads


def assert_same(model, ref_model, batch):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    got, got_g = logits_and_grads(model, batch, params)
    want, want_g = logits_and_grads(ref_model, batch, params)
    torch.testing.assert_close(got, want, **TOL)
    assert any(g is not None for g in got_g.values())
    for name in params:
        if want_g[name] is None:
            assert got_g[name] is None, name
        else:
            assert got_g[name] is not None, name
            scale = want_g[name].abs().max().clamp(min=1e-3)  # prefix gradients are ~1e-4..1e-3 here
            torch.testing.assert_close(got_g[name] / scale, want_g[name] / scale, **TOL, msg=lambda m: f"grad of {name}: {m}")


def build(tmp_path, family, method, args):
    bb = tiny_backbone(family, tmp_path, layers=LAYERS)
    cfg = RunConfig(task="superglue/cb", method=method, method_args={"prompt_length": 5, "prefix_dropout": 0.0, **args}, head_dropout=0.0)
    return build_model(cfg, bb)


FAMILIES = ["bert", "roberta"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "depth,prompted,reparameterize",
    [
        (None, [0, 1, 2, 3], False),
        (2, [2, 3], False),  # the top 2 of 4
        ([0, 2], [0, 2], False),
        (None, [0, 1, 2, 3], True),
        ([1, 3], [1, 3], True),
    ],
    ids=["all", "top2", "list02", "all-reparam", "list13-reparam"],
)
def test_ptuning_v2_matches_reference(tmp_path, family, depth, prompted, reparameterize):
    model = build(tmp_path, family, "ptuning_v2", {"depth": depth, "reparameterize": reparameterize, "prefix_hidden_size": 16})
    model.eval()
    ref = TaskModel(RefPTuningV2(model.encoder, prompted), model.head, model.kind, pooling=model.pooling)
    assert_same(model, ref, batch(family))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "depth,prompted,training",
    [(None, [0, 1, 2, 3], False), (2, [2, 3], True), ([0, 3], [0, 3], True)],
    ids=["all-eval", "top2-train", "list03-train"],
)
def test_dynamic_deep_matches_reference(tmp_path, family, depth, prompted, training):
    """Pool of 2 prefix sets mixed per instance, instance-level length (masked prefix slots).
    Training mode draws Gumbel noise (seeded alike for both), so the length selector gets a
    gradient too; every dropout is 0."""
    args = {"base": "deep", "depth": depth, "pool_size": 2, "length": "instance", "length_candidates": [2, 3, 5]}
    model = build(tmp_path, family, "dynamic", args)
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial choices: zero-initialised selectors would pick the same everywhere
        for name, p in model.encoder.named_parameters():
            if "selector" in name or "pool_net" in name:
                p.normal_(0.0, 1.0)
        model.encoder.length_selector.net.bias[0] += 1.5  # mostly the shortest length: masked prefix slots
    model.train(training)
    ref = TaskModel(RefDynamicDeep(model.encoder, prompted), model.head, model.kind, pooling=model.pooling)
    ref.train(training)
    assert_same(model, ref, batch(family))
    assert (ref.encoder.last.prompt_mask == 0).any(), "no prefix slot masked: the length choice is not exercised"
