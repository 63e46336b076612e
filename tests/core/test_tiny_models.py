"""ptcore.tiny: tiny random checkpoints that load like a user's own, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ptcore.tiny import DECODERS, FAMILIES, main, tiny_tokenizer, write_tiny_model

TEXT = "The premise: it rained. entailment"
ODD = "Numbers 12345 and  two  spaces\n\nnew lines, I'm here's  café ÅΩ ✓ {x}"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[tuple[str, int], Path]:
    """(family, seed) -> folder: seed 0 twice (as "0" and "0b"), seed 1 once."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for family in FAMILIES:
        for tag, seed in (("0", 0), ("0b", 0), ("1", 1)):
            out[family, tag] = write_tiny_model(root / f"{family}-{tag}", family, seed=seed)
    return out


def auto_model_class(family: str):
    import transformers

    return {"t5": transformers.AutoModelForSeq2SeqLM, "bert": transformers.AutoModel}.get(family, transformers.AutoModelForCausalLM)


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_looks_like_a_checkpoint(written, family):
    d = written[family, "0"]
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "pytorch_model.bin" not in names and not any(n.endswith(".tmp") for n in names)
    assert json.loads((d / "config.json").read_text())["model_type"] == family
    assert not list(d.parent.glob(".*.tmp"))  # the build folder is gone


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_offline_with_the_auto_classes_and_same_seed_same_weights(written, family):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    d = written[family, "0"]
    config = AutoConfig.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    model = auto_model_class(family).from_pretrained(d)
    expected_class = {"t5": "T5ForConditionalGeneration", "bert": "BertModel", "gpt2": "GPT2LMHeadModel",
                      "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[family]  # fmt: skip
    assert config.model_type == family and type(model).__name__ == expected_class and tok.is_fast
    assert len(tok) <= config.vocab_size == 512
    assert (config.pad_token_id, config.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)

    # the loaded weights are the written ones; the same seed writes the same, another seed others
    on_disk = load_file(d / "model.safetensors")
    loaded = model.state_dict()
    assert on_disk and all(torch.equal(loaded[k], v) for k, v in on_disk.items())
    same = load_file(written[family, "0b"] / "model.safetensors")
    other = load_file(written[family, "1"] / "model.safetensors")
    assert same.keys() == on_disk.keys() and all(torch.equal(same[k], v) for k, v in on_disk.items())
    assert not all(torch.equal(other[k], v) for k, v in on_disk.items())

    # a forward pass over tokenized text runs (every id fits the embeddings)
    batch = tok([TEXT, ODD], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"]) if family == "t5" else model(**batch)
    assert torch.isfinite(out.logits if family != "bert" else out.last_hidden_state).all()


def test_t5_tokenizer_ends_with_eos_and_pads_with_0(written):
    from transformers import AutoConfig, AutoTokenizer

    d = written["t5", "0"]
    tok = AutoTokenizer.from_pretrained(d)
    config = AutoConfig.from_pretrained(d)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2) and tok.padding_side == "right"
    # v1.1 / LM-adapt: gated GELU, no rescaling before the head (transformers 5 keeps the head itself tied)
    assert (config.decoder_start_token_id, config.feed_forward_proj, config.scale_decoder_outputs) == (0, "gated-gelu", False)
    batch = tok(["hi", TEXT, ODD], padding=True)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        n = sum(mask)
        assert ids[n - 1] == 1 and 1 not in ids[: n - 1] and ids[n:] == [0] * (len(ids) - n)
    pair = tok("premise", "hypothesis")["input_ids"]
    assert pair[-1] == 1 and pair.count(1) == 2
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_tokenizer_pads_left_with_1_and_round_trips_text(written, family):
    from transformers import AutoConfig, AutoTokenizer

    d = written[family, "0"]
    tok = AutoTokenizer.from_pretrained(d)
    config = AutoConfig.from_pretrained(d)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.padding_side) == (0, 0, 1, "left")
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 0, 1)
    if family != "gpt2":  # grouped-query attention, untied head
        assert (config.num_key_value_heads, config.tie_word_embeddings) == (2, False)
    batch = tok(["hi", TEXT], padding=True)
    ids, mask = batch["input_ids"][0], batch["attention_mask"][0]
    n = len(ids) - sum(mask)
    assert n > 0 and ids[:n] == [1] * n and mask[:n] == [0] * n and 1 not in ids[n:]
    # byte level: any text encodes without unknowns and decodes back exactly
    for text in (TEXT, ODD):
        enc = tok(text)["input_ids"]
        assert tok.decode(enc) == text and 0 not in enc and 1 not in enc
        assert enc == tiny_tokenizer(512, family)(text)["input_ids"]  # the loaded tokenizer is the one written


def test_bert_tokenizer_cls_sep_and_token_types(written):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(written["bert", "0"])
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    enc = tok("premise", "hypothesis")
    ids, types = enc["input_ids"], enc["token_type_ids"]
    first_sep = ids.index(3)
    assert ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT


def test_tokenizer_is_cached_but_each_call_gets_its_own():
    from ptcore.tiny import _trained_tokenizer_json

    a = tiny_tokenizer(512, "gpt2")
    hits = _trained_tokenizer_json.cache_info().hits
    a.padding_side = "right"
    b = tiny_tokenizer(512, "gpt2")
    assert _trained_tokenizer_json.cache_info().hits == hits + 1  # not trained again
    assert b is not a and b.padding_side == "left" and b(TEXT)["input_ids"] == a(TEXT)["input_ids"]
    assert len(tiny_tokenizer(300, "gpt2")) <= 300


def test_cli_writes_a_folder_and_prints_one_line(tmp_path, capsys):
    from transformers import AutoConfig

    d = tmp_path / "m"
    assert main([str(d), "--family", "llama", "--seed", "3", "--layers", "1", "--hidden", "16"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and str(d) in out and "llama" in out and "model.safetensors" in out
    config = AutoConfig.from_pretrained(d)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 1, 16)


def test_non_empty_target_is_refused_and_overwrite_replaces(tmp_path, capsys):
    d = tmp_path / "m"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"old weights")
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_tiny_model(d, "gpt2")
    assert main([str(d), "--family", "gpt2"]) == 2 and "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"] and sorted(p.name for p in d.iterdir()) == ["notes.txt", "pytorch_model.bin"]

    write_tiny_model(d, "gpt2", overwrite=True)
    names = {p.name for p in d.iterdir()}
    assert "model.safetensors" in names and "pytorch_model.bin" not in names and "notes.txt" in names  # stale weights go, the rest stays


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown family 'roberta'"):
        write_tiny_model(tmp_path / "a", "roberta")
    with pytest.raises(ValueError, match="too small"):
        tiny_tokenizer(100, "t5")
    with pytest.raises(ValueError, match="multiple of heads"):
        write_tiny_model(tmp_path / "b", "bert", hidden=30, heads=4)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
