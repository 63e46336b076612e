"""ptcore's prompt tuning and P-Tuning v2 against PEFT's PromptTuning and PrefixTuning (peft 0.21).

Each test builds one tiny random model (fp32, eval mode: no dropout), gives ptcore's method
and PEFT's the same prompt weights, runs one unpadded batch through both and compares

* the logits (decoders: every input position; T5: the decoder's logits for given labels), and
* the gradient of the same loss (the summed log-likelihood of some target tokens, the
  training loss up to scale) with respect to the prompt parameters: ptcore's
  ``PromptTuningEncoder.prompt`` / ``PTuningV2Encoder.prefix_encoder.prefix`` against PEFT's
  ``prompt_encoder.default.embedding.weight``, mapped between the two layouts.

Tolerance: ``atol=1e-5, rtol=1e-4`` in fp32 (the two run the same modules; what differs is
the attention path: ptcore hands the model a prepared 4-D additive mask, PEFT a 2-D one that
transformers turns into a causal mask or ``is_causal``, so sums run in another order).

Layouts (read from ``peft/peft_model.py`` ``PeftModel.get_prompt`` and
``peft/tuners/prefix_tuning/model.py``):

* prompt tuning: PEFT's embedding is ``(num_virtual_tokens * num_transformer_submodules, H)``;
  the first ``l`` rows go in front of the (encoder) input. For T5 (``SEQ_2_SEQ_LM``,
  ``num_transformer_submodules=2``) the table has ``2l`` rows and rows ``l..2l-1`` are never
  read by prompt tuning (the test checks that their gradient is zero).
* prefix tuning, decoders: PEFT's table ``(l, layers * 2 * kv_heads * head_dim)`` is viewed as
  ``(l, layers, {key, value}, kv_heads, head_dim)``, exactly ptcore's ``split_kv`` layout, so
  ptcore's ``prefix[0]`` is copied as it is. With grouped-query attention (Llama here: 4 heads,
  2 key/value heads) PEFT sizes the table by ``num_key_value_heads`` (``token_dim = kv_heads *
  head_dim``), as ptcore does; the test checks both shapes.
* prefix tuning, T5: PEFT doubles its table along the layer axis and splits it in 4-tuples
  (self key, self value, cross key, cross value) into an ``EncoderDecoderCache``, then
  replaces the cross-attention cache by an empty one. So PEFT's T5 prefix reaches the
  **decoder's self-attention only**: no encoder self-attention prefix, no cross-attention
  prefix (ptcore's ``encoder`` and ``cross`` sites have no PEFT counterpart). Decoder layer
  ``i`` reads slot ``(2 i) mod L`` of PEFT's ``L`` table slots: with an even number of
  layers, layers ``i`` and ``i + L/2`` share one prefix and half of the table is never read.
  The test fills ptcore's decoder prefixes from PEFT's table by that map, patches the ptcore
  encoder's ``prefix_kv`` to return the ``decoder`` site only, and compares PEFT's gradient
  of a slot with the sum of ptcore's gradients of the layers reading it.

Positions:

* PEFT's prefix tuning treats the prefix as ``l`` past tokens: the model numbers the input
  from ``l``. ptcore does not shift (the input starts at 0). PEFT forwards ``position_ids`` to
  the model after adding ``l`` to them (``PeftModel._adjust_prompt_learning_kwargs``), so the
  comparison passes ``position_ids = arange(T) - l`` and the model sees ``0..T-1``, as in
  ptcore. :func:`test_prefix_positions_differ_without_alignment` shows the logits differ
  without it (GPT-2: absolute position embeddings; Llama: the unrotated prefix keys meet
  queries rotated by ``p + l`` instead of ``p``), so the comparison really checks positions.
* Prompt tuning: PEFT passes no positions (the model's default ``0..l+T-1`` over prompt and
  input), ptcore numbers the real tokens ``cumsum(mask) - 1``: the same on unpadded rows, which
  is why every input here is unpadded (on a left-padded row they differ).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

from ptcore.backbones import Backbone  # noqa: E402
from ptcore.methods import get_method, make_method_config  # noqa: E402
from ptcore.tiny import tiny_model, tiny_tokenizer  # noqa: E402

# PEFT hands the model its prefix as `past_key_values`, which transformers 5.24+ deprecates (for `cache`)
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")

ATOL, RTOL = 1e-5, 1e-4
L_PROMPT = 4  # prompt / prefix length
N, T = 2, 7  # batch, input length (no padding)
DECODERS = ("gpt2", "llama")


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _models(family: str, layers: int = 2):
    """(ptcore's model, PEFT's copy): the same random weights, eval mode."""
    model = tiny_model(family, seed=0, layers=layers).eval()
    return model, copy.deepcopy(model)


def _encoder(method: str, family: str, model, **options):
    tok = tiny_tokenizer(512, family)
    cfg = make_method_config(method, {"prompt_length": L_PROMPT, **options})
    enc = get_method(method).encoder_cls(Backbone(model, tok, "tiny", "tiny"), cfg)
    return enc.eval()


def _peft(model, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, config)
    return pm.eval()


def _table(pm) -> torch.nn.Parameter:
    return pm.prompt_encoder["default"].embedding.weight


def _ids(seed: int = 1, n: int = N, t: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 500, (n, t), generator=g)  # no special token, no padding
    return ids, torch.ones_like(ids)


def _target_mask(ids: torch.Tensor) -> torch.Tensor:
    tm = torch.zeros_like(ids)
    tm[:, -3:] = 1  # the last three tokens are "the target"
    return tm


def _logp(logits: torch.Tensor, ids: torch.Tensor, tm: torch.Tensor) -> torch.Tensor:
    """What DecoderRunner.target_logprobs computes, from a model's (N,T,V) logits."""
    lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return lp * tm[:, 1:].to(lp.dtype)


# ---------------------------------------------------------------- decoders


@pytest.mark.parametrize("family", DECODERS)
def test_prompt_tuning_matches_peft_on_decoders(family):
    mine, theirs = _models(family)
    enc = _encoder("prompt_tuning", family, mine)
    with torch.no_grad():
        enc.prompt.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    pm = _peft(theirs, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=L_PROMPT))
    table = _table(pm)
    assert table.shape == enc.prompt.shape
    with torch.no_grad():
        table.copy_(enc.prompt)

    ids, mask = _ids()
    tm = _target_mask(ids)
    got = enc.runner.logits(ids, mask)  # (N,T,V)
    want = pm(input_ids=ids, attention_mask=mask).logits[:, L_PROMPT:]  # PEFT returns the prompt's positions too
    _close(got, want, f"{family} prompt tuning logits")

    enc.runner.target_logprobs({"input_ids": ids, "attention_mask": mask, "target_mask": tm}).sum().backward()
    _logp(pm(input_ids=ids, attention_mask=mask).logits[:, L_PROMPT:], ids, tm).sum().backward()
    assert enc.prompt.grad.abs().sum() > 0
    _close(enc.prompt.grad, table.grad, f"{family} prompt tuning gradient")


def _prefix_pair(family: str):
    """ptcore's P-Tuning v2 encoder and PEFT's prefix tuning with the same prefix table."""
    mine, theirs = _models(family)
    enc = _encoder("ptuning_v2", family, mine, prefix_dropout=0.0)
    prefix = enc.prefix_encoder.prefix  # (1, l, layers*2*kv*d), N(0,1) at init
    pm = _peft(theirs, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=L_PROMPT))
    cfg = pm.peft_config["default"]
    kv, d = enc.family.kv_dims(mine.config)
    # grouped-query attention: PEFT sizes its table by the key/value heads, as ptcore does
    assert (cfg.num_attention_heads, cfg.token_dim) == (kv, kv * d)
    if family == "llama":
        assert kv < mine.config.num_attention_heads  # the tiny Llama does use GQA
    table = _table(pm)
    assert table.shape == prefix.shape[1:]  # the same (l, layers*2*kv*d) layout: copied as it is
    with torch.no_grad():
        table.copy_(prefix[0])
    return enc, prefix, pm, table


@pytest.mark.parametrize("family", DECODERS)
def test_ptuning_v2_matches_peft_prefix_tuning_on_decoders(family):
    enc, prefix, pm, table = _prefix_pair(family)
    ids, mask = _ids()
    tm = _target_mask(ids)
    # PEFT adds l to the position ids it is given: pass arange(T) - l, the model sees 0..T-1 as in ptcore
    aligned = (torch.arange(T) - L_PROMPT).expand(N, T)

    got = enc.runner.logits(ids, mask)
    want = pm(input_ids=ids, attention_mask=mask, position_ids=aligned).logits
    _close(got, want, f"{family} P-Tuning v2 logits")

    enc.runner.target_logprobs({"input_ids": ids, "attention_mask": mask, "target_mask": tm}).sum().backward()
    _logp(pm(input_ids=ids, attention_mask=mask, position_ids=aligned).logits, ids, tm).sum().backward()
    assert prefix.grad.abs().sum() > 0
    _close(prefix.grad[0], table.grad, f"{family} P-Tuning v2 gradient")


@pytest.mark.parametrize("family", DECODERS)
def test_prefix_positions_differ_without_alignment(family):
    """Without the position ids, PEFT numbers the input from l: its logits are not ptcore's."""
    enc, _, pm, _ = _prefix_pair(family)
    ids, mask = _ids()
    with torch.no_grad():
        got = enc.runner.logits(ids, mask)
        shifted = pm(input_ids=ids, attention_mask=mask).logits
    assert (got - shifted).abs().max() > 1e-3


# ---------------------------------------------------------------- T5


def _t5_batch():
    ids, mask = _ids(seed=3)
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(3, 500, (N, 5), generator=g)
    labels[0, -1] = -100  # one padded target position: it must not count
    return ids, mask, labels


def _t5_logits(runner, ids, mask, labels) -> torch.Tensor:
    """The decoder's logits (N,Tl,V) for ``labels``, as ``T5Runner.target_logprobs`` computes them
    (one target per source)."""
    rows = torch.arange(ids.shape[0])
    runner._state = runner._prefixes(ids.shape[0], rows)
    try:
        states, emask = runner._encode(ids, mask)
        dec_in = runner.lm._shift_right(labels.masked_fill(labels < 0, runner.lm.config.pad_token_id))
        return runner._decode(states[rows], emask[rows], dec_in)
    finally:
        runner._state = None


def _t5_target_logprobs(runner, ids, mask, labels) -> torch.Tensor:
    return runner.target_logprobs({"input_ids": ids, "attention_mask": mask, "labels": labels, "rows": torch.arange(ids.shape[0])})


def _peft_t5_logprobs(logits, labels):
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return lp * (labels >= 0).to(lp.dtype)


def test_prompt_tuning_matches_peft_on_t5():
    mine, theirs = _models("t5")
    enc = _encoder("prompt_tuning", "t5", mine)
    with torch.no_grad():
        enc.prompt.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    pm = _peft(theirs, peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=L_PROMPT))
    table = _table(pm)
    assert table.shape == (2 * L_PROMPT, enc.prompt.shape[1])  # num_transformer_submodules=2: 2l rows
    with torch.no_grad():
        table[:L_PROMPT].copy_(enc.prompt)

    ids, mask, labels = _t5_batch()
    got = _t5_logits(enc.runner, ids, mask, labels)
    want = pm(input_ids=ids, attention_mask=mask, labels=labels).logits
    _close(got, want, "t5 prompt tuning logits")

    _t5_target_logprobs(enc.runner, ids, mask, labels).sum().backward()
    _peft_t5_logprobs(pm(input_ids=ids, attention_mask=mask, labels=labels).logits, labels).sum().backward()
    assert enc.prompt.grad.abs().sum() > 0
    _close(enc.prompt.grad, table.grad[:L_PROMPT], "t5 prompt tuning gradient")
    assert table.grad[L_PROMPT:].abs().sum() == 0  # PEFT's second half is never read by prompt tuning


def peft_t5_decoder_slot(layer: int, layers: int) -> int:
    """The slot of PEFT's (l, layers, 2, heads, d) prefix table that T5 decoder layer ``layer``
    reads (peft 0.21, ``get_prompt`` with ``num_transformer_submodules=2``): the table is
    doubled along its ``2 * layers`` key/value rows, cut into 4-tuples, and the first two of
    tuple ``i`` are layer ``i``'s self-attention key and value: rows ``4i, 4i+1`` mod ``2L``."""
    return (2 * layer) % layers


@pytest.mark.parametrize("layers", [2, 3])
def test_ptuning_v2_decoder_prefix_matches_peft_prefix_tuning_on_t5(layers, monkeypatch):
    """PEFT's T5 prefix is the decoder self-attention's: compare ptcore's ``decoder`` site alone
    (ptcore's ``encoder`` and ``cross`` prefixes have no PEFT form)."""
    mine, theirs = _models("t5", layers=layers)
    enc = _encoder("ptuning_v2", "t5", mine, prefix_dropout=0.0)
    assert list(enc.prefix_layers) == ["encoder", "decoder", "cross"]
    heads, d = enc.family.kv_dims(mine.config)
    prefix = enc.prefix_encoder.prefix  # (1, l, 3L*2*heads*d): encoder, decoder, cross layers
    pm = _peft(theirs, peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=L_PROMPT))
    table = _table(pm)
    assert table.shape == (L_PROMPT, layers * 2 * heads * d)

    mine_v = prefix.view(L_PROMPT, 3 * layers, 2, heads, d)  # a view: writes go to the parameter
    theirs_v = table.view(L_PROMPT, layers, 2, heads, d)
    slots = [peft_t5_decoder_slot(i, layers) for i in range(layers)]
    with torch.no_grad():
        for i, s in enumerate(slots):
            mine_v[:, layers + i] = theirs_v[:, s]  # ptcore's decoder layer i := what PEFT gives it

    full = enc.prefix_kv
    monkeypatch.setattr(enc, "prefix_kv", lambda n: {"decoder": full(n)["decoder"]})  # the site PEFT fills

    # what PEFT hands the decoder is what ptcore's decoder site holds; cross-attention gets nothing
    cache = pm.get_prompt(1)
    assert len(cache.cross_attention_cache.layers) == 0
    k_mine, v_mine = enc.prefix_kv(1)["decoder"]  # (1, L, heads, l, d)
    for i, layer in enumerate(cache.self_attention_cache.layers):
        torch.testing.assert_close(layer.keys, k_mine[:, i], rtol=0, atol=0)
        torch.testing.assert_close(layer.values, v_mine[:, i], rtol=0, atol=0)

    ids, mask, labels = _t5_batch()
    got = _t5_logits(enc.runner, ids, mask, labels)
    want = pm(input_ids=ids, attention_mask=mask, labels=labels).logits
    _close(got, want, f"t5 ({layers} layers) decoder prefix logits")

    _t5_target_logprobs(enc.runner, ids, mask, labels).sum().backward()
    _peft_t5_logprobs(pm(input_ids=ids, attention_mask=mask, labels=labels).logits, labels).sum().backward()
    g_mine = prefix.grad.view(L_PROMPT, 3 * layers, 2, heads, d)
    assert g_mine[:, :layers].abs().sum() == 0 and g_mine[:, 2 * layers:].abs().sum() == 0  # encoder, cross: unused here
    expected = torch.zeros_like(theirs_v)
    for i, s in enumerate(slots):
        expected[:, s] += g_mine[:, layers + i]  # a slot read by two layers gets both gradients
    assert g_mine[:, layers:2 * layers].abs().sum() > 0
    _close(table.grad.view_as(theirs_v), expected, f"t5 ({layers} layers) decoder prefix gradient")
    if layers % 2 == 0:  # layers i and i + L/2 share a slot; the other half of PEFT's table is never read
        unread = sorted(set(range(layers)) - set(slots))
        assert unread and table.grad.view_as(theirs_v)[:, unread].abs().sum() == 0
