"""Dynamic prompting on a tiny random BERT (no tokenizer: the encoder is called with tensors)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from transformers import BertConfig, BertModel

from ptcore.backbones import backbone_from_model
from ptcore.errors import ConfigError
from ptcore.methods import METHODS, make_method_config
from ptcore.methods.common import gather_tokens, insert_prompt
from ptcore.methods.dynamic import DynamicConfig, DynamicEncoder
from ptcore.methods.dynamic.select import arrangement_scores, arrangement_slots, temperature
from ptcore.methods.prompt_tuning import PromptTuningConfig, PromptTuningEncoder
from ptcore.methods.ptuning_v2 import PTuningV2Config, PTuningV2Encoder

H, L = 32, 4


def tiny_backbone(seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    cfg = BertConfig(
        hidden_size=H, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    return backbone_from_model(BertModel(cfg), tokenizer=None)


def make(seed: int = 0, **kw) -> DynamicEncoder:
    bb = tiny_backbone(seed)
    torch.manual_seed(seed + 100)
    return DynamicEncoder(bb, DynamicConfig(**{"prompt_length": L, **kw}))


def batch(n: int = 3, t: int = 7, pair: bool = True, seed: int = 0):
    """[CLS]=1 ... [SEP]=2, row 1 padded; with ``pair`` a second segment (types 1)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, t), generator=g)
    ids[:, 0] = 1
    ids[:, -1] = 2
    am = torch.ones_like(ids)
    if n > 1:
        ids[1, t - 2 :] = 0
        ids[1, t - 3] = 2
        am[1, t - 2 :] = 0
    tt = torch.zeros_like(ids)
    if pair:
        tt[:, t // 2 :] = 1
        tt[am == 0] = 0
    return ids, am, tt


def force(selector, index: int, n_options: int) -> None:
    """Make a task-level selector's argmax ``index``."""
    with torch.no_grad():
        selector.logits.copy_(torch.nn.functional.one_hot(torch.tensor(index), n_options).float() * 5.0)


# ------------------------------------------------------------------ config / registry


def test_registered_and_config_validation():
    assert "dynamic" in METHODS.names()
    cfg = make_method_config("dynamic", {"position": "instance", "pool_size": 2})
    assert isinstance(cfg, DynamicConfig) and DynamicConfig.default_lr == 1e-2
    assert DynamicConfig(prompt_length=16).candidate_lengths() == [4, 8, 12, 16]
    assert DynamicConfig(prompt_length=3).candidate_lengths() == [1, 2, 3]
    with pytest.raises(ValidationError, match="needs base='shallow'"):
        DynamicConfig(base="deep", position="task")
    with pytest.raises(ConfigError, match="position"):
        make_method_config("dynamic", {"base": "deep", "position": "instance"})
    with pytest.raises(ValidationError, match="length_candidates"):
        DynamicConfig(prompt_length=8, length="task", length_candidates=[2, 9])
    with pytest.raises(ValidationError, match="tau_min"):
        DynamicConfig(tau0=0.5, tau_min=1.0)
    with pytest.raises(ConfigError, match="no option"):
        make_method_config("dynamic", {"positions": "task"})
    assert make(position="task").extra_tokens == L
    assert make(base="deep", length="task").extra_tokens == 0


def test_defaults_are_dynamic_and_a_static_config_is_refused():
    """``--method dynamic`` with no options is the DP paper's headline (instance-level
    position), and a config in which nothing is dynamic is refused, naming the options."""
    assert make_method_config("dynamic", {}).position == "instance"
    assert make_method_config("dynamic", {"base": "deep", "pool_size": 2}).position == "none"
    for opts, plain in (({"position": "none"}, "prompt_tuning"), ({"base": "deep"}, "ptuning_v2")):
        with pytest.raises(ConfigError, match=rf"nothing is dynamic.*length.*pool_size.*{plain}"):
            make_method_config("dynamic", opts)


def static(**kw) -> DynamicEncoder:
    """The encoder with nothing dynamic (refused as a user config; built here to check the code path)."""
    torch.manual_seed(100)
    fields = DynamicConfig.model_fields
    values = {k: f.default for k, f in fields.items()} | {"prompt_length": L, "position": "none", **kw}
    return DynamicEncoder(tiny_backbone(0), DynamicConfig.model_construct(**values))


def test_static_settings_equal_the_base_methods():
    """No position/length/pool choice: exactly prompt tuning / P-Tuning v2 with the same prompt."""
    ids, am, tt = batch()
    dyn = static().eval()
    pt = PromptTuningEncoder(tiny_backbone(0), PromptTuningConfig(prompt_length=L)).eval()
    with torch.no_grad():
        pt.prompt.copy_(dyn.pool[0])
        assert torch.allclose(dyn(ids, am, tt), pt(ids, am, tt), atol=1e-6)
    deep = static(base="deep").eval()
    v2 = PTuningV2Encoder(tiny_backbone(0), PTuningV2Config(prompt_length=L)).eval()
    with torch.no_grad():
        v2.prefix_encoder.prefix.copy_(deep.prefix_encoder.prefix)
        assert torch.allclose(deep(ids, am, tt), v2(ids, am, tt), atol=1e-6)


# ------------------------------------------------------------------ the hard choice = one arrangement


@pytest.mark.parametrize("j", range(L + 1))
def test_chosen_split_assembles_the_hand_built_arrangement(j):
    enc = make(position="task").eval()
    force(enc.position_selector, j, L + 1)
    ids, am, tt = batch(n=1, pair=False)
    embeds, mask, types, index, ch = enc.assemble(ids, am, tt)
    assert ch.split.tolist() == [j]
    words = enc.backbone.get_input_embeddings()(ids)
    p = enc.pool[0]
    manual = torch.cat([words[:, :1], p[j:].unsqueeze(0), words[:, 1:-1], p[:j].unsqueeze(0), words[:, -1:]], dim=1)
    assert torch.equal(embeds, manual)
    assert mask.sum().item() == ids.shape[1] + L
    with torch.no_grad():
        hidden = enc(ids, am, tt)
        t = ids.shape[1]
        ref = enc.backbone(inputs_embeds=manual, attention_mask=torch.ones(1, t + L, dtype=torch.long),
                           position_ids=torch.arange(t + L).unsqueeze(0)).last_hidden_state
        ref_tokens = torch.cat([ref[:, :1], ref[:, 1 + L - j : t - 1 + L - j], ref[:, -1:]], dim=1)  # strip the prompt
    assert torch.allclose(hidden, ref_tokens, atol=1e-6)


def test_training_sample_is_one_hot_and_exact():
    """Gumbel ST in training: one arrangement per row, and the assembled input is exactly
    insert_prompt's for that split (the gradient tap adds exact zeros)."""
    enc = make(position="instance", length="task", pool_size=2).train()
    ids, am, tt = batch(n=8, seed=3)
    torch.manual_seed(0)
    embeds, mask, types, index, ch = enc.assemble(ids, am, tt)
    y = ch.split_onehot.detach()
    assert ((y > 0.5).sum(1) == 1).all() and torch.allclose(y.sum(1), torch.ones(8))
    assert torch.equal(y.argmax(1), ch.split)
    assert ((ch.length_onehot.detach() > 0.5).sum(1) == 1).all()
    words = enc.backbone.get_input_embeddings()(ids)
    prompt = torch.einsum("nk,kld->nld", ch.pool_weights, enc.pool)
    ref = insert_prompt(words, am, tt, prompt, ch.split, ch.prompt_mask)
    assert torch.equal(embeds, ref[0]) and torch.equal(mask, ref[1]) and torch.equal(types, ref[2])
    assert torch.equal(ch.soft_mask.detach(), ch.prompt_mask.float())  # cumulative one-hot: exact 1/0


def test_arrangement_slots_match_insert_prompt():
    ids, am, tt = batch(n=3)
    n, t = ids.shape
    words = torch.randn(n, t, H)
    prompt = torch.randn(n, L, H)
    tok, prm = arrangement_slots(am, L, torch.arange(L + 1).expand(n, L + 1))
    for j in range(L + 1):
        out, _, _, index = insert_prompt(words, am, tt, prompt, torch.full((n,), j))
        assert torch.equal(tok[:, j], index)
        assert torch.equal(out.gather(1, prm[:, j].unsqueeze(-1).expand(n, L, H)), prompt)


def test_position_scores_equal_the_definition():
    """dL/dy_j = sum over tokens of grad(current slot) . (pos + type embedding under j), by loops."""
    enc = make(position="task", estimator="first_order").train()
    ids, am, tt = batch(n=3, pair=True, seed=5)
    n, t = ids.shape
    embeds, mask, types, index, ch = enc.assemble(ids, am, tt)
    out = enc.backbone(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types,
                       position_ids=enc.position_ids(n, t + L, "cpu")).last_hidden_state
    r = torch.randn_like(out)
    (out * r).sum().backward(inputs=[ch.split_onehot])
    y = ch.split_onehot
    # recompute G = dL/d embeds and the scores by loops
    e = embeds.detach().requires_grad_(True)
    out2 = enc.backbone(inputs_embeds=e, attention_mask=mask, token_type_ids=types, position_ids=enc.position_ids(n, t + L, "cpu")).last_hidden_state
    (out2 * r).sum().backward()
    G = e.grad
    pe = enc.backbone.embeddings.position_embeddings.weight
    te = enc.backbone.embeddings.token_type_embeddings.weight
    ref = torch.zeros(n, L + 1)
    for i in range(n):
        length = int(am[i].sum())
        j0 = int(ch.split[i])
        def layout(j):  # slot of each token / prompt vector, and the prompt vectors' segment
            front = list(range(j, L))
            back = list(range(j))
            seq = [("x", 0)] + [("p", k) for k in front] + [("x", s) for s in range(1, length - 1)] + [("p", k) for k in back] + [("x", length - 1)]
            return {item: slot for slot, item in enumerate(seq)}, {k: (int(tt[i, 0]) if k >= j else int(tt[i, length - 1])) for k in range(L)}
        cur, _ = layout(j0)
        for j in range(L + 1):
            new, ptype = layout(j)
            for item, slot in cur.items():
                add = pe[new[item]] + (te[ptype[item[1]]] if item[0] == "p" else 0)
                ref[i, j] += G[i, slot] @ add
    # the ST gradient to the logits is softmax-Jacobian(scores); compare scores through it
    est = arrangement_scores(G, ch.split, am, torch.ones(n, L, dtype=torch.long), pe[: t + L], te[tt[:, 0]],
                             te[tt.gather(1, (am.sum(1) - 1).unsqueeze(1)).squeeze(1)])
    assert torch.allclose(est, ref, atol=1e-5)
    assert torch.allclose(y.grad, ref, atol=1e-5)  # what the one-hot actually receives


def test_position_estimator_ranks_true_arrangement_losses():
    """Measured: the first-order scores rank the true per-instance losses of all l+1
    arrangements (mean Spearman > 0.6 over instances and starting splits)."""
    enc = make(seed=1, position="task", estimator="first_order")
    with torch.no_grad():
        enc.pool.normal_(0, 1.0)
    bb = enc.backbone.eval()
    n, t = 32, 6
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(20, 100, (n, t), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    am, tt = torch.ones_like(ids), torch.zeros_like(ids)
    words = bb.get_input_embeddings()(ids).detach()
    w = torch.randn(H, 3, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    pos = enc.position_ids(n, t + L, "cpu")

    def run(j):
        e, m, ty, idx = insert_prompt(words, am, tt, enc.pool[0].detach().expand(n, -1, -1), torch.full((n,), j))
        e = e.requires_grad_(True)
        h = gather_tokens(bb(inputs_embeds=e, attention_mask=m, token_type_ids=ty, position_ids=pos).last_hidden_state, idx)
        return e, torch.nn.functional.cross_entropy(h.mean(1) @ w, labels, reduction="none")

    true = torch.stack([run(j)[1].detach() for j in range(L + 1)], 1)  # (n, l+1)
    table = bb.embeddings.position_embeddings.weight[: t + L]
    rhos = []
    for j0 in range(L + 1):
        e, loss = run(j0)
        loss.sum().backward()
        est = arrangement_scores(e.grad, torch.full((n,), j0), am, torch.ones(n, L), table).detach()
        rank = lambda x: x.argsort(1).argsort(1).float()  # noqa: E731
        a, b = rank(true), rank(est)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        rhos.append(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean().item())
    assert sum(rhos) / len(rhos) > 0.6, rhos


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize(
    "kw, expect",
    [
        (dict(position="instance", pool_size=2), ["pool", "position_selector.net.weight", "pool_net.weight"]),
        (dict(position="task", pool_size=3), ["pool", "position_selector.logits", "pool_net.weight"]),
        (dict(length="task"), ["pool", "length_selector.logits"]),
        (dict(position="instance", length="instance", pool_size=2),
         ["pool", "position_selector.net.weight", "length_selector.net.weight", "pool_net.weight"]),
        (dict(base="deep", pool_size=2, length="task"), ["prefix_encoder.prefix", "pool_net.weight", "length_selector.logits"]),
        (dict(base="deep", length="instance", reparameterize=True, prefix_hidden_size=16),
         ["prefix_encoder.tokens", "prefix_encoder.mlp.0.weight", "length_selector.net.weight"]),
    ],
)
def test_gradients_reach_selectors_and_pool(kw, expect):
    enc = make(**kw).train()
    ids, am, tt = batch(n=6, seed=2)
    torch.manual_seed(1)
    h = enc(ids, am, tt)
    assert h.shape == (6, ids.shape[1], H)
    (h * torch.randn_like(h)).sum().backward()
    grads = {n: p.grad for n, p in enc.named_parameters() if p.requires_grad}
    for name in expect:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert all(p.grad is None for p in enc.backbone.parameters())


# ------------------------------------------------------------------ temperature


@pytest.mark.parametrize(
    "anneal, mid", [("exponential", math.sqrt(2.0 * 0.1)), ("linear", 1.05), ("cosine", 1.05)]
)
def test_temperature_schedule(anneal, mid):
    total = 101
    assert temperature(0, total, 2.0, 0.1, anneal) == pytest.approx(2.0)
    assert temperature(50, total, 2.0, 0.1, anneal) == pytest.approx(mid)
    assert temperature(100, total, 2.0, 0.1, anneal) == pytest.approx(0.1)
    assert temperature(500, total, 2.0, 0.1, anneal) == pytest.approx(0.1)
    vals = [temperature(s, total, 2.0, 0.1, anneal) for s in range(total)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    enc = make(position="task", tau0=2.0, tau_min=0.1, anneal=anneal)
    assert enc.on_train_step(0, total)["tau"] == pytest.approx(2.0)
    assert enc.on_train_step(50, total)["tau"] == pytest.approx(mid) and enc.tau == pytest.approx(mid)
    assert enc.on_train_step(100, total)["tau"] == pytest.approx(0.1)


# ------------------------------------------------------------------ masking / determinism / deep


@pytest.mark.parametrize("base", ["shallow", "deep"])
def test_masked_prompt_slots_get_no_attention(base):
    kw = dict(length="task", length_candidates=[1, 2, 3, 4])
    if base == "shallow":
        kw["position"] = "task"
    enc = make(base=base, **kw).eval()
    force(enc.length_selector, 1, 4)  # length 2: slots 2, 3 masked
    if base == "shallow":
        force(enc.position_selector, 1, L + 1)  # P[1:] in front (slot 1 kept, 2-3 masked), P[:1] after x
    ids, am, tt = batch(n=3, seed=4)
    param = enc.pool if base == "shallow" else enc.prefix_encoder.prefix
    with torch.no_grad():
        param[:, 2:] = 0.0
        zeros = enc(ids, am, tt)
        param[:, 2:] = torch.randn_like(param[:, 2:]) * 3
        rand = enc(ids, am, tt)
        param[:, 1] = torch.randn_like(param[:, 1])  # a kept slot does matter
        changed = enc(ids, am, tt)
    assert torch.allclose(zeros, rand, atol=1e-6, rtol=0)
    assert not torch.allclose(zeros, changed, atol=1e-4)


@pytest.mark.parametrize("base", ["shallow", "deep"])
def test_eval_is_deterministic(base):
    kw = dict(length="instance", pool_size=3) if base == "deep" else dict(position="instance", length="instance", pool_size=3)
    enc = make(base=base, **kw)
    with torch.no_grad():  # non-uniform selectors
        for sel in (enc.position_selector, enc.length_selector):
            if sel is not None:
                sel.net.weight.normal_(0, 1.0)
    ids, am, tt = batch(n=5, seed=6)
    enc.eval()
    with torch.no_grad():
        a, b = enc(ids, am, tt), enc(ids, am, tt)
    assert torch.equal(a, b)


def test_deep_pool_and_length_train_step_leaves_backbone_unchanged():
    enc = make(base="deep", pool_size=2, length="instance", depth=1).train()
    before = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    prefix0 = enc.prefix_encoder.prefix.detach().clone()
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    ids, am, tt = batch(n=4, seed=7)
    enc.on_train_step(0, 10)
    h = enc(ids, am, tt)
    assert h.shape == (4, ids.shape[1], H)
    (h * torch.randn_like(h)).sum().backward()
    opt.step()
    after = enc.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(prefix0, enc.prefix_encoder.prefix)
    assert enc.last_choices.length is not None
    assert set(enc.on_train_step(1, 10)) == {"tau", "length_mean"}


# ------------------------------------------------------------------ synthetic: input-dependent position


def _train_position(level: str, steps: int = 400, seed: int = 0, estimator: str = "first_order"):
    """Two input groups (marker token 10 or 11 after [CLS]); the target output of a group is
    the frozen encoder's output with the prompt laid out at split 0 (group A) or l (group B).
    Only the position selector trains. Returns (accuracy of the chosen split, test MSE, splits, groups).
    The synthetic lives in the dynamic bench (``orchestrate bench --dynamic``'s placement section),
    on the same tiny BERT as :func:`tiny_backbone` and the same prompt length."""
    from orchestrator.bench.dynamic import PLACEMENT_BERT, PLACEMENT_L, placement_task

    assert PLACEMENT_L == L and PLACEMENT_BERT["hidden_size"] == H
    r = placement_task(estimator, level=level, steps=steps, seed=seed, threads=None)  # threads: the caller's
    return r["accuracy"], r["mse"], torch.tensor(r["splits"]), torch.tensor(r["groups"])


def test_instance_position_learns_input_dependent_splits():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend
    try:
        acc, mse, split, grp = _train_position("instance")
        task_acc, task_mse, task_split, _ = _train_position("task")
    finally:
        torch.set_num_threads(threads)
    a, b = split[grp == 0], split[grp == 1]
    differ = (a.unsqueeze(1) != b.unsqueeze(0)).float().mean().item()  # over all (A, B) pairs
    assert acc >= 0.8, (acc, a.tolist(), b.tolist())
    assert differ >= 0.8, differ
    # one split for every input can serve at most one group
    assert len(set(task_split.tolist())) == 1 and task_acc <= 0.5 + 1e-6
    assert mse < 0.5 * task_mse, (mse, task_mse)
