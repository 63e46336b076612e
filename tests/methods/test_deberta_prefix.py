"""Deep prefixes inside DeBERTa-v2/v3's disentangled attention (``ptcore.methods.deberta_prefix``):
the prefixed attention equals a hand-computed one (prefix columns by content alone, token
columns with DeBERTa's c2p + p2c terms, one softmax over both); a prefix with every slot hidden
gives DeBERTa's own attention; un-prompted layers compute exactly what the plain model does;
only the prefixes (and the head) get gradients."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.methods.deberta_prefix import DebertaDeepPrefix, prefixed_attention
from ptcore.model import build_model

N, T, L = 2, 6, 3


@pytest.fixture
def deberta(tmp_path):
    return tiny_backbone("deberta", tmp_path)  # 2 layers, hidden 32, 2 heads, dropout 0


def _inputs(bb):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (N, T), generator=g)
    mask = torch.ones(N, T, dtype=torch.long)
    mask[1, -2:] = 0  # padding in the second sequence
    return ids, mask


def _layer_inputs(bb, ids, mask):
    """What DeBERTa's encoder hands layer 0's attention: embeddings, 4-D mask, relative positions."""
    m = bb.model
    h = m.embeddings(input_ids=ids, mask=mask)
    enc = m.encoder
    mask4 = enc.get_attention_mask(mask)
    rel_pos = enc.get_rel_pos(h, None, None)
    rel_emb = enc.get_rel_embedding()
    return h, mask4, rel_pos, rel_emb


def _hand(attn, h, mask4, rel_pos, rel_emb, pk, pv, pmask):
    """The prefixed attention written out head by head."""
    heads, d = attn.num_attention_heads, attn.attention_head_size
    q = attn.transpose_for_scores(attn.query_proj(h), heads)  # (N*heads, T, d)
    k = attn.transpose_for_scores(attn.key_proj(h), heads)
    v = attn.transpose_for_scores(attn.value_proj(h), heads)
    scale = math.sqrt(d * 3)  # c2p + p2c: three score terms
    rel = attn.disentangled_attention_bias(q, k, rel_pos, rel_emb, 3)  # DeBERTa's own position terms (T x T)
    out = torch.zeros(N, T, heads * d)
    for n in range(N):
        for hd in range(heads):
            b = n * heads + hd
            for i in range(T):
                real_i = bool(mask4[n, 0, i].any())
                tok = [(q[b, i] @ k[b, j]) / scale + rel[b, i, j] if mask4[n, 0, i, j] else None for j in range(T)]
                pre = [(q[b, i] @ pk[n, hd, s]) / scale if real_i and pmask[n, s] else None for s in range(L)]
                scores = torch.stack([x if x is not None else torch.tensor(torch.finfo(torch.float32).min) for x in pre + tok])
                p = torch.softmax(scores, 0)
                vals = torch.cat([pv[n, hd], v[b]], 0)  # (L+T, d)
                out[n, i, hd * d:(hd + 1) * d] = p @ vals
    return out


def test_prefixed_attention_equals_hand_computed(deberta):
    ids, mask = _inputs(deberta)
    h, mask4, rel_pos, rel_emb = _layer_inputs(deberta, ids, mask)
    attn = deberta.model.encoder.layer[0].attention.self
    heads, d = attn.num_attention_heads, attn.attention_head_size
    g = torch.Generator().manual_seed(2)
    pk, pv = torch.randn(N, heads, L, d, generator=g), torch.randn(N, heads, L, d, generator=g)
    pmask = torch.tensor([[1, 1, 1], [1, 0, 1]])  # a hidden slot (dynamic length)

    class Owner:
        current = {0: (pk, pv, pmask)}

    with torch.no_grad():
        ours, _ = prefixed_attention(attn, Owner(), 0, h, mask4, relative_pos=rel_pos, rel_embeddings=rel_emb)
        ref = _hand(attn, h, mask4, rel_pos, rel_emb, pk, pv, pmask)
        plain, _ = type(attn).forward(attn, h, mask4, relative_pos=rel_pos, rel_embeddings=rel_emb)
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours[real], plain[real], atol=1e-4)  # the prefix does change the attention

    class Hidden:  # every prefix slot hidden: DeBERTa's own attention
        current = {0: (pk, pv, torch.zeros(N, L, dtype=torch.long))}

    with torch.no_grad():
        hidden, _ = prefixed_attention(attn, Hidden(), 0, h, mask4, relative_pos=rel_pos, rel_embeddings=rel_emb)
    torch.testing.assert_close(hidden[real], plain[real], rtol=1e-5, atol=1e-6)


def test_unprompted_layer_runs_plain_and_only_prefixes_learn(deberta, tmp_path):
    plain = tiny_backbone("deberta", tmp_path / "plain")  # same seed: same weights
    cfg = RunConfig(task="superglue/cb", method="ptuning_v2", method_args={"prompt_length": L, "depth": [1]}, data_dir=str(FIXTURES))
    model = build_model(cfg, deberta)
    assert isinstance(model.encoder.deep, DebertaDeepPrefix)
    ids, mask = _inputs(deberta)
    seen = {}
    model.encoder.backbone.encoder.layer[0].register_forward_hook(lambda m, a, out: seen.__setitem__("prompted", out[0].detach()))
    plain.model.encoder.layer[0].register_forward_hook(lambda m, a, out: seen.__setitem__("plain", out[0].detach()))
    model.train()
    hidden = model.encoder(ids, mask, torch.zeros_like(ids))
    with torch.no_grad():
        ref = plain.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(seen["prompted"], seen["plain"])  # layer 0 has no prefix: exactly DeBERTa's
    assert not torch.allclose(hidden[mask.bool()], ref[mask.bool()], atol=1e-4)  # layer 1's prefix acts
    hidden[mask.bool()].sum().backward()
    assert model.encoder.prefix_encoder.prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.backbone.parameters())
