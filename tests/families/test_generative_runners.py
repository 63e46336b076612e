"""The generative families' runners against transformers itself, by hand (tiny random models).

Each test names a behaviour of ``ptcore/families/{decoder,t5}_run.py`` and computes the same
thing another way: through transformers' own ``DynamicCache`` and 2-D masks, or token by
token from the plain model's log-softmax.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from ptcore.backbones import Backbone
from ptcore.methods import get_method, make_method_config
from ptcore.tiny import tiny_model, tiny_tokenizer

DECODERS = ("gpt2", "llama")
ATOL = 1e-5  # fp32 on the CPU: the same maths in another order


def encoder(family: str, method: str, seed: int = 0, **options):
    model = tiny_model(family, seed=seed).eval()
    if method in ("ptuning_v2",):
        options.setdefault("prefix_dropout", 0.0)
    enc = get_method(method).encoder_cls(Backbone(model, tiny_tokenizer(family=family), family, family), make_method_config(method, options))
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # prompts away from their init, so a misplaced one shows (the backbone stays the seed's)
        for name, p in enc.named_parameters():
            if p.requires_grad and not name.startswith("backbone."):
                p.add_(torch.randn_like(p) * 0.5)
    return enc.eval()


def left_padded(rows: list[list[int]], pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


ROWS = [[5, 17, 33, 60, 7, 91, 12], [44, 8, 19]]  # the second is left-padded beside the first


# ---------------------------------------------------------------- decoder LMs


@pytest.mark.parametrize("family", DECODERS)
def test_generation_with_prefixes_equals_prefixes_placed_in_the_cache_by_hand(family):
    """ptcore's greedy decoding (prefixes through its cache, its own 4-D masks) == transformers'
    plain forward over a DynamicCache that holds the prefixes as past keys/values, with the
    2-D mask [ones(l), mask] and the input's positions starting at 0 (unshifted)."""
    enc = encoder(family, "ptuning_v2", prompt_length=4)
    ids, mask = left_padded(ROWS)
    ours = enc.runner.generate(ids, mask, max_new_tokens=6)

    lm = enc.backbone
    keys, values = enc.prefix_kv(ids.shape[0])["self"]  # (N, layers, kv, l, d)
    l = keys.shape[3]
    cache = DynamicCache()
    for layer in range(keys.shape[1]):
        cache.update(keys[:, layer], values[:, layer], layer)
    full = torch.cat([torch.ones(ids.shape[0], l, dtype=torch.long), mask], 1)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    out, step_ids, eos = [[] for _ in ROWS], ids, lm.config.eos_token_id
    done = [False] * len(ROWS)
    with torch.no_grad():
        for _ in range(6):
            logits = lm(input_ids=step_ids, attention_mask=full, position_ids=pos, past_key_values=cache, use_cache=True).logits
            nxt = logits[:, -1].argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    done[i] = t == eos
                    if not done[i]:
                        out[i].append(t)
            if all(done):
                break
            step_ids = nxt.unsqueeze(1)
            full = torch.cat([full, torch.ones(len(ROWS), 1, dtype=torch.long)], 1)
            pos = pos[:, -1:] + 1
    assert ours == out
    assert any(out)  # something was generated


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("method", ["prompt_tuning", "ptuning_v2", "finetune"])
def test_a_row_scores_the_same_alone_and_beside_longer_left_padded_rows(family, method):
    """Positions count real tokens only, masks cover the virtual tokens: left padding changes nothing."""
    enc = encoder(family, method, **({"prompt_length": 3} if method != "finetune" else {}))
    ids, mask = left_padded(ROWS)
    both = enc.runner.logits(ids, mask)  # (2,T,V)
    alone = enc.runner.logits(*left_padded(ROWS[1:]))  # (1,3,V)
    torch.testing.assert_close(both[1, -3:], alone[0], atol=ATOL, rtol=0)
    assert enc.runner.generate(ids, mask, 5)[1] == enc.runner.generate(*left_padded(ROWS[1:]), 5)[0]


@pytest.mark.parametrize("family", DECODERS)
def test_an_invisible_prefix_leaves_the_plain_model(family):
    """A prefix whose slots are all masked out: the logits are the plain model's, so the prefix
    moves no position and the mask hides exactly its columns."""
    enc = encoder(family, "ptuning_v2", prompt_length=4)
    kv = enc.prefix_kv(2)
    enc.prefix_kv = lambda n: {**kv, "mask": torch.zeros(n, 4, dtype=torch.long)}
    ids, mask = left_padded(ROWS)
    plain = enc.backbone(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    torch.testing.assert_close(enc.runner.logits(ids, mask)[mask.bool()], plain[mask.bool()], atol=ATOL, rtol=0)
    enc.prefix_kv = lambda n: kv  # visible again: it changes them
    assert not torch.allclose(enc.runner.logits(ids, mask)[mask.bool()], plain[mask.bool()], atol=1e-3)


@pytest.mark.parametrize("family", DECODERS)
def test_unprompted_layers_of_a_partial_depth_compute_the_plain_model(family):
    """depth=1 prompts the top layer only: the layer below sees exactly what it sees without prompts."""
    enc = encoder(family, "ptuning_v2", prompt_length=4, depth=1)
    assert enc.prefix_layers == {"self": [1]}
    holder = enc.backbone.base_model
    blocks = holder.layers if hasattr(holder, "layers") else holder.h
    seen = []
    handle = blocks[0].register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    ids, mask = left_padded(ROWS)
    prompted = enc.runner.logits(ids, mask)
    enc.backbone(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
    handle.remove()
    torch.testing.assert_close(seen[0][mask.bool()], seen[1][mask.bool()], atol=ATOL, rtol=0)
    plain = enc.backbone(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    assert not torch.allclose(prompted[mask.bool()], plain[mask.bool()], atol=1e-3)  # the top layer is prompted


# ---------------------------------------------------------------- T5


def t5_batch(labels: list[list[int]], rows: list[int]) -> dict:
    src = [[5, 17, 33, 60, 7, 1], [44, 8, 1]]
    width = max(map(len, src))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in src])
    tw = max(map(len, labels))
    return {"input_ids": ids, "attention_mask": (ids != 0).long(),
            "labels": torch.tensor([t + [-100] * (tw - len(t)) for t in labels]), "rows": torch.tensor(rows)}


def test_t5_target_logprobs_equal_the_plain_model_by_hand():
    """Without prompts (fine-tuning), the runner's per-token log-probabilities are those of
    T5ForConditionalGeneration's own forward with ``labels``."""
    enc = encoder("t5", "finetune")
    batch = t5_batch([[9, 10, 1], [11, 1], [12, 13, 14, 1]], [0, 1, 1])
    ours = enc.runner.target_logprobs(batch)
    rows = batch["rows"]
    logits = enc.backbone(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], labels=batch["labels"]).logits
    lab = batch["labels"]
    ref = logits.log_softmax(-1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (lab >= 0)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("site", ["encoder", "decoder", "cross"])
def test_t5_an_invisible_prefix_at_each_site_leaves_the_plain_model(site):
    """The hook of each attention site: with its prefix masked out the model is the plain one
    (so relative positions and masks of the real tokens are untouched), and visible it is not."""
    enc = encoder("t5", "ptuning_v2", prompt_length=4)
    kv = enc.prefix_kv(2)
    only = {site: kv[site]}
    batch = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
    plain = encoder("t5", "finetune").runner.target_logprobs(batch)
    enc.prefix_kv = lambda n: {**only, f"{site}_mask": torch.zeros(n, 4, dtype=torch.long)}
    torch.testing.assert_close(enc.runner.target_logprobs(batch), plain, atol=ATOL, rtol=0)
    enc.prefix_kv = lambda n: only
    assert not torch.allclose(enc.runner.target_logprobs(batch), plain, atol=1e-3)


def test_t5_rows_of_a_batch_do_not_leak_into_each_other():
    """A source scores its targets the same alone as in a batch with a longer, padded source,
    prompts at every site."""
    enc = encoder("t5", "ptuning_v2", prompt_length=3)
    both = enc.runner.target_logprobs(t5_batch([[9, 10, 1], [11, 1]], [0, 1]))
    b = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
    alone = {"input_ids": b["input_ids"][1:, :3], "attention_mask": b["attention_mask"][1:, :3],
             "labels": torch.tensor([[11, 1]]), "rows": torch.tensor([0])}
    torch.testing.assert_close(both[1, :2], enc.runner.target_logprobs(alone)[0], atol=ATOL, rtol=0)


def test_t5_unprompted_layers_of_a_partial_depth_compute_the_plain_model():
    enc = encoder("t5", "ptuning_v2", prompt_length=4, depth=1)
    assert enc.prefix_layers == {"encoder": [1], "decoder": [1], "cross": [1]}
    seen = []
    handle = enc.backbone.encoder.block[0].register_forward_hook(lambda m, a, out: seen.append(out[0]))
    batch = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
    enc.runner.target_logprobs(batch)
    plain = encoder("t5", "finetune")
    plain.backbone.encoder.block[0].register_forward_hook(lambda m, a, out: seen.append(out[0]))
    plain.runner.target_logprobs(batch)
    handle.remove()
    m = batch["attention_mask"].bool()
    torch.testing.assert_close(seen[0][m], seen[-1][m], atol=ATOL, rtol=0)


def test_t5_soft_prompt_is_read_in_front_of_the_encoder_input():
    """Prompt tuning on T5 == the plain model given [prompt embeddings; input embeddings] with a
    mask of ones over the prompt."""
    enc = encoder("t5", "prompt_tuning", prompt_length=3)
    batch = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
    ours = enc.runner.target_logprobs(batch)
    lm = enc.backbone
    emb = torch.cat([enc.prompt.unsqueeze(0).expand(2, -1, -1), lm.get_input_embeddings()(batch["input_ids"])], 1)
    mask = torch.cat([torch.ones(2, 3, dtype=torch.long), batch["attention_mask"]], 1)
    logits = lm(inputs_embeds=emb, attention_mask=mask, labels=batch["labels"]).logits
    lab = batch["labels"]
    ref = logits.log_softmax(-1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (lab >= 0)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- dynamic prompting's length choice


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_dynamic_length_choice_masks_exactly_the_slots_past_it(family):
    """Deep dynamic prompting with a task-level length choice of 2 (of 4 slots), evaluated: the
    same model as P-Tuning v2 with only those 2 prefix slots, at every site of the family."""
    dyn = encoder(family, "dynamic", base="deep", position="none", length="task", prompt_length=4, prefix_dropout=0.0)
    with torch.no_grad():
        dyn.length_selector.logits.copy_(torch.tensor([0.0, 5.0, 0.0, 0.0]))  # candidates 1, 2, 3, 4: pick 2
    pt = encoder(family, "ptuning_v2", prompt_length=2)
    with torch.no_grad():
        pt.prefix_encoder.prefix.copy_(dyn.prefix_encoder.prefix[:, :2])
    if family == "t5":
        batch = t5_batch([[9, 10, 1], [11, 1]], [0, 1])
        torch.testing.assert_close(dyn.runner.target_logprobs(batch), pt.runner.target_logprobs(batch), atol=ATOL, rtol=0)
    else:
        ids, mask = left_padded(ROWS)
        torch.testing.assert_close(dyn.runner.logits(ids, mask)[mask.bool()], pt.runner.logits(ids, mask)[mask.bool()], atol=ATOL, rtol=0)
        assert dyn.runner.generate(ids, mask, 4) == pt.runner.generate(ids, mask, 4)


def test_t5_buckets_and_shift_equal_transformers_own():
    """ptcore's copies of two private T5 helpers (the bucket formula, the teacher-forcing shift)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    from ptcore.families.t5_run import relative_position_bucket, shift_right

    rel = torch.arange(-300, 300).view(1, -1)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 16)):
            ours = relative_position_bucket(rel, bidirectional, buckets, distance)
            theirs = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
            assert torch.equal(ours, theirs)
    lm = tiny_model("t5")
    labels = torch.tensor([[9, 10, 1], [11, 1, -100]])
    assert torch.equal(shift_right(labels, 0, 0), lm._shift_right(labels))


# ---------------------------------------------------------------- the other decoder model types the family names


def other_decoder(model_type: str):
    """A tiny random Mistral / Qwen3 / Gemma (grouped-query attention), built from its config."""
    import transformers

    common = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    config = {"mistral": transformers.MistralConfig, "qwen3": transformers.Qwen3Config,
              "gemma": transformers.GemmaConfig}[model_type](**common, **({"head_dim": 8} if model_type != "mistral" else {}))
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", ["mistral", "qwen3", "gemma"])
def test_other_decoder_types_take_prefixes_and_left_padding_alike(model_type):
    """The family's other model types: an invisible prefix leaves the plain model, a visible one
    changes it, and a left-padded row scores as it does alone."""
    model = other_decoder(model_type)
    enc = get_method("ptuning_v2").encoder_cls(Backbone(model, None, model_type, model_type),
                                               make_method_config("ptuning_v2", {"prompt_length": 3, "prefix_dropout": 0.0})).eval()
    assert enc.family.name == "decoder"
    rows = [[r % 120 + 2 for r in row] for row in ROWS]
    ids, mask = left_padded(rows)
    plain = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    own = enc.prefix_kv
    enc.prefix_kv = lambda n: {**own(n), "mask": torch.zeros(n, 3, dtype=torch.long)}
    torch.testing.assert_close(enc.runner.logits(ids, mask)[mask.bool()], plain[mask.bool()], atol=ATOL, rtol=0)
    enc.prefix_kv = own
    prompted = enc.runner.logits(ids, mask)
    assert not torch.allclose(prompted[mask.bool()], plain[mask.bool()], atol=1e-3)
    alone = enc.runner.logits(*left_padded(rows[1:]))
    torch.testing.assert_close(prompted[1, -3:], alone[0], atol=ATOL, rtol=0)


def test_a_greedy_step_keeps_tokens_up_to_the_end_token_per_row():
    """Both runners' bookkeeping: a row stops at its end token (not kept), the others go on."""
    from ptcore.families.base import take_greedy_step

    out, done = [[], []], [False, False]
    assert not take_greedy_step([5, 0], out, done, {0})  # row 1 ends
    assert not take_greedy_step([6, 7], out, done, {0})  # row 1 keeps nothing more
    assert take_greedy_step([0, 8], out, done, {0})
    assert out == [[5, 6], []] and done == [True, True]


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_generation_stops_a_row_at_its_end_token_and_runs_the_others_on(family):
    """A runner-level greedy decode in which row 0's third token is forced to be the end token
    (a hook on the LM head: a random tiny model never picks it by itself): row 0 keeps exactly
    the two tokens before it, row 1 decodes on as it does without the hook."""
    enc = encoder(family, "prompt_tuning", prompt_length=3)
    if family == "t5":
        b = t5_batch([[9, 1], [9, 1]], [0, 1])
        ids, mask = b["input_ids"], b["attention_mask"]
    else:
        ids, mask = left_padded(ROWS)
    plain = enc.runner.generate(ids, mask, 6)
    eos = enc.backbone.config.eos_token_id
    assert all(eos not in row for row in plain) and len(plain[0]) == 6  # unforced, row 0 runs to the limit
    calls = []

    def force_end(module, args, out):
        calls.append(1)
        if len(calls) == 3:  # the third token of the decode
            out = out.clone()
            (out[0, -1] if out.dim() == 3 else out[0])[eos] = 1e4
        return out

    handle = enc.backbone.get_output_embeddings().register_forward_hook(force_end)
    try:
        forced = enc.runner.generate(ids, mask, 6)
    finally:
        handle.remove()
    assert forced[0] == plain[0][:2]
    assert forced[1] == plain[1]
