"""NER (token classification): CoNLL reader, task specs, sub-word label alignment for every
method, scoring, and the real WNUT-17 files when the data directory is there."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import FIXTURES, real_data_dir
from ptcore.config import RunConfig
from tinymodels import tiny_bert, vocab_tokenizer
from ptcore.data import make_loader
from ptcore.errors import DataError
from ptcore.methods import METHODS, method_fields
from ptcore.metrics import METRICS
from ptcore.tasks import TASKS, get_task, load_splits
from ptcore.tasks import readers
from ptcore.tasks.io import read_records
from ptcore.tasks.kinds import get_kind
from ptcore.tasks.ner import iob2_tags
from ptcore.tasks.sequence_kinds import word_prefix
from ptcore.model import build_model
from ptcore.train import evaluate, prepare_data

NER_TASKS = ["ner/conll2003", "ner/conll2004", "ner/ontonotes", "ner/wnut17"]
# task -> sentences in the fixture's (train, dev, test) files
FIXTURE_COUNTS = {
    "ner/wnut17": (8, 4, 4),
    "ner/conll2003": (5, 3, 3),
    "ner/conll2004": (3, 2, 2),
    "ner/ontonotes": (3, 2, 2),
}


# ---------------------------------------------------------------- a tiny offline BERT


def tiny_vocab() -> list[str]:
    """Characters (so every word splits into sub-words) plus a few whole words."""
    chars = list(string.ascii_lowercase + string.digits)
    return (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + chars
        + ["##" + c for c in chars]
        + list(string.punctuation)
        + ["the", "to", "in", "and", "with", "star", "wars", "paris", "new", "york", "##ing"]
    )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = vocab_tokenizer(tiny_vocab(), tmp_path_factory.mktemp("tok"))
    return tok


def tiny_backbone(tokenizer):
    return tiny_bert(tokenizer)


def method_args(method: str) -> dict:
    return {"prompt_length": 4} if "prompt_length" in method_fields(method) else {}


# ---------------------------------------------------------------- CoNLL reader


def test_iob1_to_iob2():
    assert readers.iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG",
    ]  # fmt: skip
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    assert readers.iob1_to_iob2(iob2) == iob2  # IOB2 input is left alone


def test_conll2003_fixture_iob1_docstart_crlf():
    spec = get_task("ner/conll2003")
    assert spec.options["scheme"] == "IOB1" and spec.local.tag_column == -1
    root = FIXTURES / spec.local.path
    train = read_records(root / "train.txt", spec)
    assert len(train) == 5  # two -DOCSTART- documents, neither a sentence
    assert all("-DOCSTART-" not in s["tokens"] for s in train)
    assert train[0]["tokens"][:3] == ["EU", "rejects", "German"]
    assert train[0]["tags"][:3] == ["B-ORG", "O", "B-MISC"]  # IOB1 I-ORG starting an entity -> B-ORG
    assert train[1]["tags"] == ["B-PER", "I-PER"]
    paris = train[4]
    assert list(zip(paris["tokens"], paris["tags"]))[2:6] == [
        ("Paris", "B-LOC"), ("Berlin", "B-LOC"), ("and", "O"), ("Rome", "B-LOC"),
    ]  # fmt: skip
    dev = read_records(root / "dev.txt", spec)  # CRLF line ends
    assert len(dev) == 3 and all("\r" not in t for s in dev for t in s["tokens"] + s["tags"])
    test = read_records(root / "test.txt", spec)  # no final newline
    assert len(test) == 3 and test[-1]["tokens"][-1] == "1996-12-06"


def test_conll_blank_lines_and_docstart_anywhere(tmp_path: Path):
    text = (
        "\n\n-DOCSTART- -X- -X- O\n"  # leading blanks, DOCSTART without a blank line after it
        "A NN B-NP B-PER\nB NN I-NP I-PER\n"
        "-DOCSTART- -X- -X- O\n"  # DOCSTART right after a token line: ends the sentence
        "C NN B-NP O\n \t \n\n\n"  # whitespace-only line, repeated blank lines
        "D\tNN\tB-NP\tB-LOC\r\n"  # tabs and a CRLF
        "E NN B-NP I-LOC\n\n\n"
    )
    path = tmp_path / "x.txt"
    path.write_bytes(text.encode())
    sents = readers.read_conll(path)
    assert [s["tokens"] for s in sents] == [["A", "B"], ["C"], ["D", "E"]]
    assert [s["tags"] for s in sents] == [["B-PER", "I-PER"], ["O"], ["B-LOC", "I-LOC"]]
    path.write_bytes(b"A B-PER\nB I-PER")  # no final newline
    assert readers.read_conll(path) == [{"tokens": ["A", "B"], "tags": ["B-PER", "I-PER"]}]
    path.write_bytes(b"A x NN B-PER\n")
    assert readers.read_conll(path, tag_column=2) == [{"tokens": ["A"], "tags": ["NN"]}]
    path.write_bytes(b"A\n")
    with pytest.raises(DataError, match="x.txt:1"):
        readers.read_conll(path)


def test_wnut_tab_only_separator_lines_and_trailing_blanks():
    spec = get_task("ner/wnut17")
    root = FIXTURES / spec.local.path
    assert b"\n\t\n" in (root / "train.txt").read_bytes()  # like the official file
    train = read_records(root / "train.txt", spec)
    assert len(train) == 8
    assert train[0]["tokens"][-6:] == ["Empire", "State", "Building", "=", "ESB", "."]
    assert train[0]["tags"][-6:] == ["B-location", "I-location", "I-location", "O", "B-location", "O"]


def test_unknown_format_and_unknown_tags(tmp_path: Path):
    spec = get_task("ner/wnut17")
    with pytest.raises(DataError, match="'xml'"):
        readers.read("xml", tmp_path / "f.xml", spec)
    (tmp_path / "ner" / "wnut17").mkdir(parents=True)
    for name in ("train.txt", "dev.txt", "test.txt"):
        shutil.copy(FIXTURES / "ner" / "wnut17" / name, tmp_path / "ner" / "wnut17" / name)
    (tmp_path / "ner" / "wnut17" / "dev.txt").write_text("a\tB-city\n")
    with pytest.raises(DataError, match="B-city"):
        load_splits(spec, data_dir=tmp_path)


# ---------------------------------------------------------------- specs and fixtures


def test_ner_specs():
    assert sorted(n for n in TASKS.names() if n.startswith("ner/")) == NER_TASKS
    wnut = get_task("ner/wnut17")
    assert len(wnut.labels) == 13 and wnut.labels[0] == "O"
    assert set(wnut.labels) == {"O"} | {f"{p}-{t}" for p in "BI" for t in
                                        ("corporation", "creative-work", "group", "location", "person", "product")}
    assert get_task("ner/conll2003").labels == iob2_tags(("PER", "ORG", "LOC", "MISC"))
    assert get_task("ner/conll2004").labels == iob2_tags(("Loc", "Org", "Peop", "Other"))
    assert len(get_task("ner/ontonotes").labels) == 37
    for name in NER_TASKS:
        spec = get_task(name)
        assert spec.kind == "token_classification" and spec.local.format == "conll"
        assert spec.local.files == {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
        assert spec.primary == "entity_f1" and set(spec.metrics) == {"entity_f1", "entity_precision", "entity_recall"}
        assert spec.description and "\n" not in spec.description


@pytest.mark.parametrize("name", NER_TASKS)
def test_fixture_loads(name: str):
    spec = get_task(name)
    splits, notes = load_splits(spec, data_dir=FIXTURES)
    assert set(splits) == {"train", "dev", "test"} and notes == []  # official dev: no carving
    assert tuple(len(splits[s]) for s in ("train", "dev", "test")) == FIXTURE_COUNTS[name]
    for exs in splits.values():
        for ex in exs:
            assert len(ex["tokens"]) == len(ex["tags"]) == len(ex["tag_ids"]) > 0
            assert [spec.labels[i] for i in ex["tag_ids"]] == ex["tags"]


def test_hub_records_with_integer_tags():
    spec = get_task("ner/wnut17")
    ex = spec.hook({"id": "0", "tokens": ["new", "york"], "ner_tags": [7, 8]}, spec)
    assert ex["tags"] == ["B-location", "I-location"]


# ---------------------------------------------------------------- sub-word alignment


def test_first_subword_labelled(tokenizer):
    kind = get_kind("token_classification")
    ex = {"tokens": ["Empire", "State", "paris", "x"], "tags": ["B-location", "I-location", "B-location", "O"], "tag_ids": [7, 8, 7, 0]}
    (feat,) = kind.encode([ex], tokenizer, max_length=64)
    pieces = tokenizer.convert_ids_to_tokens(feat["input_ids"])
    assert pieces == ["[CLS]", "e", "##m", "##p", "##i", "##r", "##e", "s", "##t", "##a", "##t", "##e", "paris", "x", "[SEP]"]
    assert feat["labels"] == [-100, 7, -100, -100, -100, -100, -100, 8, -100, -100, -100, -100, 7, 0, -100]
    assert feat["word_index"] == [-1, 0, -1, -1, -1, -1, -1, 1, -1, -1, -1, -1, 2, 3, -1]
    assert len(feat["input_ids"]) == len(feat["attention_mask"]) == len(feat["token_type_ids"])


def test_truncated_words_are_predicted_O(tokenizer):
    spec = get_task("ner/wnut17")
    kind = get_kind("token_classification")
    ex = {"tokens": ["paris", "is", "in", "paris"], "tags": ["B-location", "O", "O", "B-location"], "tag_ids": [7, 0, 0, 7]}
    feats = kind.encode([ex], tokenizer, max_length=5)  # [CLS] paris i ##s [SEP]: words 2, 3 cut
    assert feats[0]["word_index"] == [-1, 0, 1, -1, -1]
    batch = kind.collate(feats, tokenizer.pad_token_id)
    logits = torch.zeros(1, 5, spec.num_labels)
    logits[0, 1, 7] = logits[0, 2, 0] = 1.0
    preds = kind.decode(logits, batch)
    assert preds == [[7, 0]]
    scores = kind.score(preds, feats, [ex], spec)
    # predicted [B-loc, O, O, O]: 1 of 2 gold entities, no false positive
    assert scores["entity_precision"] == pytest.approx(1.0)
    assert scores["entity_recall"] == pytest.approx(0.5)
    assert scores["entity_f1"] == pytest.approx(2 / 3)


def test_roberta_style_tokenizer_gets_prefix_space():
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "a": 5, "b": 6, "Ġ": 7, "Ġa": 8, "Ġb": 9}
    merges = [("Ġ", "a"), ("Ġ", "b")]
    plain = RobertaTokenizer(vocab=dict(vocab), merges=list(merges))
    prefixed = RobertaTokenizer(vocab=dict(vocab), merges=list(merges), add_prefix_space=True)
    assert plain.convert_ids_to_tokens(plain("a b", add_special_tokens=False)["input_ids"]) == ["a", "Ġb"]
    assert word_prefix(plain) == " " and word_prefix(prefixed) == ""
    kind = get_kind("token_classification")
    ex = {"tokens": ["a", "b"], "tags": ["O", "O"], "tag_ids": [0, 0]}
    for tok in (plain, prefixed):
        (feat,) = kind.encode([ex], tok, max_length=16)
        assert tok.convert_ids_to_tokens(feat["input_ids"]) == ["<s>", "Ġa", "Ġb", "</s>"]
        assert feat["labels"] == [-100, 0, 0, -100] and feat["token_type_ids"] == [0, 0, 0, 0]


# ---------------------------------------------------------------- every method


class ForcedTags(nn.Module):
    """Stands in for a model: logits one-hot on the gold tags (O where unlabelled)."""

    def __init__(self, kind, num_labels: int):
        super().__init__()
        self.kind, self.num_labels = kind, num_labels

    def forward(self, batch):
        labels = batch["labels"].clamp(min=0)
        return nn.functional.one_hot(labels, self.num_labels).float()


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_aligned_and_learns(method: str, tokenizer, monkeypatch):
    monkeypatch.delenv("PTCORE_CACHE_DIR", raising=False)
    cfg = RunConfig(task="ner/wnut17", method=method, method_args=method_args(method), data_dir=str(FIXTURES), device="cpu", head_dropout=0.0)
    backbone = tiny_backbone(tokenizer)
    model = build_model(cfg, backbone)
    data = prepare_data(cfg, backbone, model.encoder.extra_tokens)
    limit = 126 - model.encoder.extra_tokens  # min(spec 128, 128 positions - 2) - prompt tokens
    assert max(len(f["input_ids"]) for s in data.features.values() for f in s) <= limit
    spec = get_task(cfg.task)
    batch = next(iter(make_loader(data.features["train"], model.kind, tokenizer.pad_token_id, 8, shuffle=False)))
    model.eval()  # no dropout: the loss must fall on a fixed batch
    logits = model(batch)
    assert logits.shape == (*batch["input_ids"].shape, spec.num_labels)  # prompts stripped: aligned with the input
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2 if method != "finetune" else 1e-3)
    losses = []
    for _ in range(8):
        loss = model.kind.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for split in ("dev", "test"):
        loader = make_loader(data.features[split], model.kind, tokenizer.pad_token_id, 4, shuffle=False)
        scores = evaluate(model, loader, data.features[split], data.examples[split], spec, "cpu")
        assert {"entity_f1", "entity_precision", "entity_recall", "primary"} <= set(scores)
        forced = evaluate(ForcedTags(model.kind, spec.num_labels), loader, data.features[split], data.examples[split], spec, "cpu")
        assert forced["entity_f1"] == forced["primary"] == 1.0


# ---------------------------------------------------------------- metrics


def test_seqeval_entity_metrics():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold PER, LOC, ORG; predicted PER, ORG, LOC(wrong place): 2 right of 3 and 3
    for name in ("entity_precision", "entity_recall", "entity_f1"):
        assert METRICS.get(name)(pred, gold) == pytest.approx(2 / 3)
    gold, pred = [["B-PER", "O", "B-LOC", "O"]], [["B-PER", "O", "O", "O"]]
    assert METRICS.get("entity_precision")(pred, gold) == 1.0
    assert METRICS.get("entity_recall")(pred, gold) == 0.5
    assert METRICS.get("entity_f1")(pred, gold) == pytest.approx(2 / 3)
    # default (conlleval) mode: an I- after O begins an entity; a type change ends one
    assert METRICS.get("entity_f1")([["I-PER", "I-PER"]], [["B-PER", "I-PER"]]) == 1.0
    assert METRICS.get("entity_f1")([["B-PER", "I-LOC"]], [["B-PER", "I-PER"]]) == 0.0
    assert METRICS.get("entity_f1")([["O"]], [["O"]]) == 0.0  # nothing to find: 0, no warning


# ---------------------------------------------------------------- the real files


@pytest.mark.data
def test_real_wnut17():
    root = real_data_dir()
    if root is None or not (root / "ner" / "wnut17").is_dir():
        pytest.skip("real data directory with ner/wnut17 not found (set PTCORE_DATA_DIR)")
    spec = get_task("ner/wnut17")
    splits, notes = load_splits(spec, data_dir=root)
    assert {s: len(v) for s, v in splits.items()} == {"train": 3394, "dev": 1009, "test": 1287}
    assert notes == []
    entities = sum(t.startswith("B-") for ex in splits["train"] for t in ex["tags"])
    assert entities == 221 + 140 + 264 + 548 + 660 + 142  # PROVENANCE.md mention counts
