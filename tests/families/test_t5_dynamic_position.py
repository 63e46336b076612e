"""Dynamic prompting's position choice on T5 (``PromptEncoder.place_soft_prompt``): the prompt
split around the encoder input as the DP reference lays it out, ``P[j:] x P[:j] </s>``, and the
reference's mixture estimator giving the choice its gradient."""

from __future__ import annotations

import pytest
import torch

from ptcore.errors import ConfigError
from ptcore.methods.dynamic.model import mixture_of_arrangements

from numgrad import central_differences
from test_generative_runners import ATOL, encoder, t5_batch

L = 4


def force(selector, j: int) -> None:
    """A task-level selector whose argmax is split ``j``."""
    with torch.no_grad():
        selector.logits.copy_(torch.nn.functional.one_hot(torch.tensor(j), L + 1).float() * 8.0)


def by_hand(enc, batch, j: int) -> torch.Tensor:
    """T5's own forward on ``P[j:] x[:last] P[:j] x[last:]`` built row by row (``last``: the row's
    final real token, its </s>), padding after; -> (M,Tl) target log-probabilities."""
    lm, ids, am = enc.backbone, batch["input_ids"], batch["attention_mask"]
    p = enc.pool[0]  # (l,H)
    words = lm.get_input_embeddings()(ids)
    rows, masks = [], []
    for i in range(ids.shape[0]):
        last = int(am[i].sum()) - 1
        rows.append(torch.cat([p[j:], words[i, :last], p[:j], words[i, last:]]))
        masks.append(torch.cat([torch.ones(L + last + 1, dtype=torch.long), torch.zeros(ids.shape[1] - last - 1, dtype=torch.long)]))
    r = batch["rows"]
    emb, mask = torch.stack(rows)[r], torch.stack(masks)[r]
    lab = batch["labels"]
    logits = lm(inputs_embeds=emb, attention_mask=mask, labels=lab).logits
    return logits.log_softmax(-1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (lab >= 0)


@pytest.mark.parametrize("j", [0, 1, L])
def test_t5_position_lays_the_prompt_around_the_input_as_the_reference(j):
    """Evaluated at split j: the runner's log-probabilities are T5's own on ``P[j:] x P[:j] </s>``
    (j = 0: the whole prompt in front, prompt tuning's layout), on right-padded rows."""
    enc = encoder("t5", "dynamic", position="task", prompt_length=L)
    force(enc.position_selector, j)
    batch = t5_batch([[9, 10, 1], [11, 1], [12, 1]], [0, 1, 1])
    torch.testing.assert_close(enc.runner.target_logprobs(batch), by_hand(enc, batch, j), atol=ATOL, rtol=0)
    if j:  # and the split matters: another layout scores otherwise
        assert not torch.allclose(enc.runner.target_logprobs(batch), by_hand(enc, batch, 0), atol=1e-3)


def test_t5_training_forward_is_the_sampled_layout_and_the_choice_gets_the_mixture_gradient():
    """In training (instance level, the reference's selector): the straight-through mixture's
    value is the sampled split's layout exactly, and the selector learns through it."""
    enc = encoder("t5", "dynamic", position="instance", selector="linear_relu", prompt_length=L)
    enc.train()
    enc.backbone.eval()  # the backbone's dropout off: the comparison is exact
    batch = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
    torch.manual_seed(3)
    ours = enc.runner.target_logprobs(batch)
    splits = enc.last_choices.split
    for i, j in enumerate(splits.tolist()):
        one = {k: v[i:i + 1] for k, v in batch.items() if k != "rows"} | {"rows": torch.tensor([0])}
        one["input_ids"], one["attention_mask"] = batch["input_ids"][i:i + 1], batch["attention_mask"][i:i + 1]
        with torch.no_grad():
            ref = by_hand(enc, one, j)
        n = int((batch["labels"][i] >= 0).sum())
        torch.testing.assert_close(ours[i, :n], ref[0, :n], atol=ATOL, rtol=0)
    ours.sum().backward()
    grads = [p.grad for p in enc.position_selector.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_t5_soft_mixture_gradient_matches_finite_differences(monkeypatch):
    """``mixture_soft`` on T5 in float64, the Gumbel noise fixed: d loss / d (position logits) by
    autograd equals central finite differences of the loss."""
    from transformers.models.t5 import modeling_t5

    def layer_norm_f64(self, h):  # T5's RMS norm, its variance in the model's dtype (transformers takes it in float32)
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_t5.T5LayerNorm, "forward", layer_norm_f64)
    enc = encoder("t5", "dynamic", position="task", estimator="mixture_soft", prompt_length=L).double()
    enc.train()
    enc.backbone.eval()
    with torch.no_grad():
        enc.position_selector.logits.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64))
    batch = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
    runner, ids, am = enc.runner, batch["input_ids"], batch["attention_mask"]
    target = torch.randn(2, ids.shape[1] + L, enc.backbone.config.d_model, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss() -> torch.Tensor:  # the encoder's states in float64 (target_logprobs' log-softmax runs in float32)
        torch.manual_seed(11)  # the same Gumbel noise every call
        enc.prepare(ids, am)
        states, _ = runner._encode(ids, am)  # (N, T+l, H)
        return (states * target).sum()

    enc.zero_grad()
    loss().backward()
    auto = enc.position_selector.logits.grad.clone()
    assert auto.abs().sum() > 0
    # with grad enabled: the mixture is built where the choice carries a gradient
    numeric = central_differences(loss, enc.position_selector.logits, 1e-6)
    torch.testing.assert_close(auto, numeric, atol=1e-6, rtol=1e-5)


def test_t5_mixture_layouts_are_the_reference_sequences():
    """``mixture_of_arrangements(head=0)`` with a one-hot at j is ``P[j:] x[:last] P[:j] x[last:]``."""
    torch.manual_seed(0)
    words, prompt = torch.randn(2, 5, 3), torch.randn(2, L, 3)
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    for j in range(L + 1):
        w = torch.nn.functional.one_hot(torch.tensor([j, j]), L + 1).float()
        out = mixture_of_arrangements(words, am, torch.zeros_like(am), prompt, w, head=0)
        for i in range(2):
            last = int(am[i].sum()) - 1
            ref = torch.cat([prompt[i, j:], words[i, :last], prompt[i, :j], words[i, last:]])
            torch.testing.assert_close(out[i], ref)


def test_t5_first_order_is_refused_and_names_the_fix():
    with pytest.raises(ConfigError, match="relative position buckets; use estimator: mixture"):
        encoder("t5", "dynamic", position="instance", estimator="first_order", prompt_length=L)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_position_on_decoder_lms_is_refused_before_weights_load(family):
    with pytest.raises(ConfigError, match="not for decoder LMs yet; set position: none"):
        encoder(family, "dynamic", position="instance", prompt_length=L)
