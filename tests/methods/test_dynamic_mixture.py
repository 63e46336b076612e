"""The DP reference's position estimator (``estimator: mixture``): a mixture of the l+1 assembled
input sequences, on a tiny random BERT and DeBERTa-v3 (ptcore/methods/dynamic/model.py,
``mixture_of_arrangements``)."""

from __future__ import annotations

import pytest
import torch

from ptcore.errors import ConfigError
from ptcore.methods.dynamic import DynamicConfig, DynamicEncoder
from tinymodels import tiny_backbone as tiny_named_backbone

from numgrad import central_differences
from test_dynamic import L, batch, force, tiny_backbone  # the same tiny BERT and batches as the first-order tests


def make(estimator: str, seed: int = 0, dtype=torch.float32, **kw) -> DynamicEncoder:
    bb = tiny_backbone(seed)
    bb.model.to(dtype)
    torch.manual_seed(seed + 100)
    enc = DynamicEncoder(bb, DynamicConfig(prompt_length=L, position="task", estimator=estimator, **kw)).to(dtype)
    return enc.train()  # the mixture is built only where the choice carries a gradient: in training


def test_the_mixture_forward_is_the_hard_choice():
    """Straight-through weights: the value is the chosen arrangement exactly, the first-order
    estimator's forward (same seed, same Gumbel sample), whatever the split."""
    ids, am, tt = batch()
    first, mixture = make("first_order"), make("mixture")
    for j in range(L + 1):
        force(first.position_selector, j, L + 1)
        force(mixture.position_selector, j, L + 1)
        torch.manual_seed(7)
        a = first(ids, am, tt)
        torch.manual_seed(7)
        b = mixture(ids, am, tt)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert mixture.last_choices.split.tolist() == first.last_choices.split.tolist() == [j] * 3


def test_the_soft_mixture_gradient_matches_finite_differences():
    """``mixture_soft`` in float64, the Gumbel noise fixed: d loss / d (position logits) by
    autograd equals central finite differences of the loss itself."""
    ids, am, tt = batch()
    enc = make("mixture_soft", dtype=torch.float64)
    with torch.no_grad():
        enc.position_selector.logits.copy_(torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], dtype=torch.float64))
    target = torch.randn(3, ids.shape[1], 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss() -> torch.Tensor:
        torch.manual_seed(11)  # the same Gumbel noise every call
        return (enc(ids, am, tt) * target).sum()

    enc.zero_grad()
    loss().backward()
    auto = enc.position_selector.logits.grad.clone()
    assert auto.abs().sum() > 0
    # with grad enabled: the mixture is built where the choice carries a gradient
    numeric = central_differences(loss, enc.position_selector.logits, 1e-5)
    torch.testing.assert_close(auto, numeric, rtol=1e-5, atol=1e-8)


def test_at_a_low_temperature_the_soft_forward_is_the_hard_choice():
    ids, am, tt = batch()
    soft, hard = make("mixture_soft"), make("mixture")
    soft.tau = hard.tau = 1e-4
    for enc in (soft, hard):
        force(enc.position_selector, 2, L + 1)
    torch.manual_seed(3)
    a = soft(ids, am, tt)
    torch.manual_seed(3)
    b = hard(ids, am, tt)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_hard_mixture_gives_the_selector_the_assembled_sequences_gradient():
    """dL/dw_j = <dL/dE, A_j>: the position logits get a gradient (none when the weights are cut off)."""
    ids, am, tt = batch()
    enc = make("mixture")
    enc(ids, am, tt).sum().backward()
    assert enc.position_selector.logits.grad.abs().sum() > 0


def test_the_mixture_lifts_the_position_refusal_on_deberta(tmp_path):
    """DeBERTa has relative positions only: the first-order estimator is refused, the mixture trains."""
    bb = tiny_named_backbone("deberta", tmp_path)
    with pytest.raises(ConfigError, match="estimator: mixture"):
        DynamicEncoder(bb, DynamicConfig(prompt_length=L, position="instance", estimator="first_order"))
    enc = DynamicEncoder(bb, DynamicConfig(prompt_length=L, position="instance")).train()  # the default: mixture
    ids, am, _ = batch(pair=False)
    ids = ids.clamp(max=len(bb.tokenizer) - 1)
    out = enc(ids, am, None)
    assert out.shape == (3, ids.shape[1], bb.config.hidden_size)
    out.sum().backward()
    assert enc.position_selector.net.bias.grad.abs().sum() > 0


def test_dynamic_position_trains_end_to_end_on_a_tiny_local_deberta_v3(tmp_path, fixtures_dir):
    """A tiny DeBERTa-v3 saved as a user's folder: dynamic prompting with the instance-level position
    choice (the default estimator, the reference's mixture) trains, reports, and moves its selector."""
    import math

    from ptcore.checkpoint import load_checkpoint
    from ptcore.config import RunConfig
    from ptcore.train import train
    from tinymodels import save_tiny

    path = save_tiny("deberta", tmp_path / "deberta")
    cfg = RunConfig(task="superglue/cb", method="dynamic", model=str(path), data_dir=str(fixtures_dir),
                    method_args={"position": "instance", "prompt_length": 4}, epochs=1, batch_size=4,
                    max_train_examples=8, max_eval_examples=6, max_length=64)
    assert cfg.method_args.estimator == "mixture"
    result = train(cfg, output=tmp_path / "run", progress=False)
    assert not math.isnan(result["val"]["primary"])
    weights = load_checkpoint(tmp_path / "run" / "checkpoint").trainable_state_dict()
    w = weights["encoder.position_selector.net.weight"]
    assert w.abs().sum() > 0  # zero-initialised: only training moves it
