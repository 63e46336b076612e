"""P-Tuning v2 specifics: parameter count, prefix injection, unshifted positions, depth."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.model import build_model


def pt2(tmp_path, family="bert", layers=2, **args):
    bb = tiny_backbone(family, tmp_path, layers=layers)
    cfg = RunConfig(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": 5, "prefix_dropout": 0.0, **args})
    model = build_model(cfg, bb).eval()
    return bb, model


@pytest.mark.parametrize("depth,n_layers", [(None, 3), (1, 1), ([0, 2], 2)])
def test_trainable_count_formula(tmp_path, depth, n_layers):
    bb, model = pt2(tmp_path, layers=3, depth=depth)
    hidden, classes = 32, 3
    trainable, total = model.param_counts()
    assert trainable == 5 * 2 * n_layers * hidden + (hidden * classes + classes)
    assert total == trainable + sum(p.numel() for p in bb.model.parameters())


def test_reparameterized_count(tmp_path):
    _, model = pt2(tmp_path, reparameterize=True, prefix_hidden_size=7)
    trainable, _ = model.param_counts()
    l, h, layers = 5, 32, 2
    mlp = (h * 7 + 7) + (7 * layers * 2 * h + layers * 2 * h)
    assert trainable == l * h + mlp + (h * 3 + 3)


def capture(module):
    """Record the (args, kwargs, output) of a module's forward."""
    seen = {}

    def pre(mod, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs

    def post(mod, args, kwargs, out):
        seen["out"] = out

    h1 = module.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = module.register_forward_hook(post, with_kwargs=True)
    return seen, (h1, h2)


def reference_attention(attn, hidden, pk, pv, mask):
    """Hand-computed multi-head attention of one layer with a key/value prefix.
    hidden (N,T,H); pk, pv (N,heads,l,d); mask (N,T) over the input tokens."""
    n, t, h = hidden.shape
    heads = pk.shape[1]
    d = h // heads
    split = lambda x: x.view(n, -1, heads, d).transpose(1, 2)  # noqa: E731
    q, k, v = split(attn.query(hidden)), split(attn.key(hidden)), split(attn.value(hidden))
    k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)  # (N,heads,l+T,d)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (N,heads,T,l+T)
    full = torch.cat([torch.ones(n, pk.shape[2]), mask.float()], 1)
    scores = scores.masked_fill(full[:, None, None, :] == 0, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, h)


def test_prefix_injection_matches_reference(tmp_path):
    from ptcore.methods.ptuning_v2.model import split_kv

    bb, model = pt2(tmp_path)
    enc = model.encoder
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    for layer in (0, 1):
        seen, hooks = capture(bb.model.encoder.layer[layer].attention.self)
        enc(ids, mask, torch.zeros_like(ids))
        for hk in hooks:
            hk.remove()
        hidden = seen["args"][0]
        keys, values = split_kv(enc.prefix_encoder().expand(2, -1, -1), 2, 2)
        ref = reference_attention(bb.model.encoder.layer[layer].attention.self, hidden, keys[:, layer], values[:, layer], mask)
        got = seen["out"][0]
        real = mask.bool()
        torch.testing.assert_close(got[real], ref[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family,offset", [("bert", 0), ("roberta", 2), ("electra", 0)])
def test_position_ids_not_shifted_by_prefix(tmp_path, family, offset):
    bb, model = pt2(tmp_path, family=family)
    seen, hooks = capture(bb.model.embeddings)
    ids = torch.tensor([[2, 10, 11, 3]])
    model.encoder(ids, torch.ones_like(ids), torch.zeros_like(ids))
    pos = seen["kwargs"]["position_ids"]
    assert pos.tolist() == [[offset + i for i in range(4)]]


def test_unprompted_layers_see_no_prefix(tmp_path):
    """depth=[1]: layer 0 must compute exactly what the plain backbone computes."""
    bb, model = pt2(tmp_path, depth=[1])
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    mask = (ids != 0).long()
    seen, hooks = capture(bb.model.encoder.layer[0])
    model.encoder(ids, mask, torch.zeros_like(ids))
    prompted = seen["out"]
    prompted = prompted[0] if isinstance(prompted, tuple) else prompted
    plain = bb.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]
    for hk in hooks:
        hk.remove()
    real = mask.bool()
    torch.testing.assert_close(prompted[real], plain[real], rtol=1e-4, atol=1e-5)
    # ...while the prompted layer differs from the plain one
    out = model.encoder(ids, mask, torch.zeros_like(ids))
    assert not torch.allclose(out[real], bb.model(input_ids=ids, attention_mask=mask).last_hidden_state[real])


# ---------------------------------------------------------------- the cache argument, un-prompted layers


def batch_with_padding():
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    return ids, (ids != 0).long()


@pytest.mark.parametrize(
    "method,args",
    [
        ("ptuning_v2", {}),
        ("ptuning_v2", {"depth": [1]}),  # an un-prompted layer: the mask swap runs too
        ("dynamic", {"base": "deep", "depth": 1, "length": "task", "length_candidates": [2, 5]}),
    ],
)
@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_deep_prefix_forward_emits_no_warning(tmp_path, family, method, args):
    """No deprecation (``past_key_values``) or any other warning, forward and backward."""
    bb = tiny_backbone(family, tmp_path)
    cfg = RunConfig(task="superglue/cb", method=method, method_args={"prompt_length": 5, "prefix_dropout": 0.0, **args})
    model = build_model(cfg, bb).train()
    ids, mask = batch_with_padding()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encoder(ids, mask, torch.zeros_like(ids)).sum().backward()


def test_cache_argument_follows_the_signature():
    import transformers
    from packaging.version import Version
    from transformers import BertModel

    from ptcore.methods.common import cache_argument

    class OldModel:  # transformers 5.0: only `past_key_values`
        def forward(self, input_ids=None, attention_mask=None, past_key_values=None):
            pass

    if Version(transformers.__version__) >= Version("5.24"):
        assert cache_argument(BertModel) == "cache"  # `past_key_values` is deprecated there
    assert cache_argument(OldModel) == "past_key_values"


def layer_masks(bb, run) -> list:
    """The attention mask each layer receives during ``run()`` (after any pre-hook swap)."""
    seen = {}

    def pre(i):
        return lambda mod, args: seen.__setitem__(i, args[1])

    hooks = [layer.register_forward_pre_hook(pre(i)) for i, layer in enumerate(bb.model.encoder.layer)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(hooks))]


def test_unprompted_layers_get_the_plain_mask(tmp_path):
    """depth = top 2 of 4: layers 0-1 see the plain T-column mask (no prefix columns at all),
    layers 2-3 the l+T one."""
    bb, model = pt2(tmp_path, layers=4, depth=2)
    ids, mask = batch_with_padding()
    t, l = ids.shape[1], 5
    got = layer_masks(bb, lambda: model.encoder(ids, mask, torch.zeros_like(ids)))
    plain = layer_masks(bb, lambda: bb.model(input_ids=ids, attention_mask=mask))
    for i in (0, 1):
        assert got[i].shape[-1] == t
        assert torch.equal(got[i], plain[i])
    for i in (2, 3):
        assert got[i].shape[-1] == l + t


def test_nothing_below_the_lowest_prompted_layer_requires_grad(tmp_path):
    """Autograd never reaches the layers under the prompts: their outputs carry no graph."""
    bb, model = pt2(tmp_path, layers=4, depth=[2, 3])
    model.train()
    outs = {}
    hooks = [
        layer.register_forward_hook(lambda mod, args, out, i=i: outs.__setitem__(i, out[0] if isinstance(out, tuple) else out))
        for i, layer in enumerate(bb.model.encoder.layer)
    ]
    ids, mask = batch_with_padding()
    model.encoder(ids, mask, torch.zeros_like(ids)).sum().backward()
    for h in hooks:
        h.remove()
    assert [outs[i].requires_grad for i in range(4)] == [False, False, True, True]
    assert outs[1].grad_fn is None
    assert model.encoder.prefix_encoder.prefix.grad is not None
