"""Extractive QA (SQuAD v1.1 / v2.0): reader, article-level carving, windows and offsets for
every method, span selection, the official EM/F1, and the real SQuAD v1.1 dev file."""

from __future__ import annotations

import collections
import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import FIXTURES, real_data_dir
from ptcore.config import RunConfig
from tinymodels import tiny_bert, vocab_tokenizer
from ptcore.data import make_loader
from ptcore.methods import METHODS, method_fields
from ptcore.metrics import METRICS, squad_normalize
from ptcore.tasks import TASKS, get_task, load_splits
from ptcore.tasks.io import SPLIT_SEED, read_records
from ptcore.tasks.kinds import get_kind
from ptcore.tasks.sequence_kinds import ExtractiveQA
from ptcore.model import build_model
from ptcore.train import evaluate, prepare_data



# ---------------------------------------------------------------- a tiny offline BERT


def fixture_vocab() -> list[str]:
    """Every word of the SQuAD fixtures; words of 7+ letters as two pieces (``word`` +
    ``##rest``), so answers are a few tokens and sub-word offsets are exercised."""
    words: set[str] = set()
    for path in sorted((FIXTURES / "squad").rglob("*.json")):
        words |= set(re.findall(r"[a-z0-9]+", path.read_text().lower()))
    vocab = set(string.ascii_lowercase + string.digits) | {"##" + c for c in string.ascii_lowercase + string.digits}
    for w in words:
        vocab |= {w[:4], "##" + w[4:]} if len(w) >= 7 else {w}
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation) + sorted(vocab)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = vocab_tokenizer(fixture_vocab(), tmp_path_factory.mktemp("tok"))
    assert tok.tokenize("Christiaan Huygens") == ["chri", "##stiaan", "huyg", "##ens"]
    return tok


def tiny_backbone(tokenizer):
    return tiny_bert(tokenizer)


def method_args(method: str) -> dict:
    return {"prompt_length": 4} if "prompt_length" in method_fields(method) else {}


# ---------------------------------------------------------------- reader and specs


def test_squad_specs():
    assert {"qa/squad", "qa/squad_v2"} <= set(TASKS.names())
    for name, version in (("qa/squad", "1.1"), ("qa/squad_v2", "2.0")):
        spec = get_task(name)
        assert spec.kind == "extractive_qa" and spec.local.format == "squad"
        assert spec.local.path == f"squad/v{version}"
        assert spec.local.files == {"train": f"train-v{version}.json", "val": f"dev-v{version}.json"}
        assert spec.primary == "squad_f1" and set(spec.metrics) == {"squad_em", "squad_f1"}
        assert spec.max_length == 384 and spec.options["doc_stride"] == 128
        assert spec.options["carve_by"] == "title" and "article" in spec.description
    assert get_task("qa/squad_v2").options["version_2_with_negative"] is True


def test_squad_v11_reader():
    spec = get_task("qa/squad")
    records = read_records(FIXTURES / "squad" / "v1.1" / "dev-v1.1.json", spec)
    raw = json.loads((FIXTURES / "squad" / "v1.1" / "dev-v1.1.json").read_text())
    assert len(records) == sum(len(p["qas"]) for a in raw["data"] for p in a["paragraphs"]) == 31
    assert len({r["title"] for r in records}) == 10
    assert len({r["id"] for r in records}) == 31
    for r in records:
        assert set(r) == {"id", "title", "question", "context", "answers", "is_impossible"}
        assert not r["is_impossible"] and len(r["answers"]["text"]) == 3  # three annotators, as in dev
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][start : start + len(text)] == text


def test_squad_v2_reader_impossible():
    spec = get_task("qa/squad_v2")
    records = read_records(FIXTURES / "squad" / "v2.0" / "dev-v2.0.json", spec)
    impossible = [r for r in records if r["is_impossible"]]
    assert len(records) == 6 and len(impossible) == 3
    assert all(r["answers"] == {"text": [], "answer_start": []} for r in impossible)  # plausible_answers ignored
    assert all(r["answers"]["text"] for r in records if not r["is_impossible"])


def test_v11_without_train_file_is_carved_by_article():
    spec = get_task("qa/squad")
    splits, notes = load_splits(spec, data_dir=FIXTURES)
    titles = {s: {ex["title"] for ex in exs} for s, exs in splits.items()}
    assert {s: len(t) for s, t in titles.items()} == {"train": 7, "dev": 1, "val": 2}  # 70/10/20 of 10 articles
    assert not (titles["train"] & titles["dev"] or titles["train"] & titles["val"] or titles["dev"] & titles["val"])
    assert sum(len(v) for v in splits.values()) == 31
    assert any("carved 70/10/20 by title" in n and str(SPLIT_SEED) in n for n in notes)
    again, _ = load_splits(spec, data_dir=FIXTURES)
    assert again == splits  # deterministic


def test_v2_dev_carved_from_train_by_article():
    spec = get_task("qa/squad_v2")
    splits, notes = load_splits(spec, data_dir=FIXTURES)
    assert len(splits["val"]) == 6  # the official dev file, whole
    assert not {ex["title"] for ex in splits["train"]} & {ex["title"] for ex in splits["dev"]}
    assert any("by title" in n for n in notes)
    assert any(ex["is_impossible"] for ex in splits["train"])


def test_hub_record_shape():
    spec = get_task("qa/squad")
    rec = {"id": "x", "title": "T", "context": "Paris is big.", "question": "What?", "answers": {"text": ["Paris"], "answer_start": [0]}}
    ex = spec.hook(rec, spec)
    assert ex["answers"] == rec["answers"] and ex["title"] == "T" and ex["doc_stride"] == 128


# ---------------------------------------------------------------- windows and offsets


def _span(ex: dict, feat: dict, start: int, end: int) -> str:
    offsets = feat["offset_mapping"]
    return ex["context"][offsets[start][0] : offsets[end][1]]


def test_windows_overlap_and_question_tokens_have_no_offsets(tokenizer):
    spec = get_task("qa/squad")
    kind = get_kind("extractive_qa")
    examples = [ex for exs in load_splits(spec, data_dir=FIXTURES)[0].values() for ex in exs]
    long_ex = max(examples, key=lambda ex: len(ex["context"]))
    feats = kind.encode([long_ex], tokenizer, max_length=48)  # stride 128 does not fit: reduced
    assert len(feats) > 2
    for a, b in zip(feats, feats[1:]):
        last_a = [o for o in a["offset_mapping"] if o is not None][-1]
        first_b = [o for o in b["offset_mapping"] if o is not None][0]
        assert first_b[0] < last_a[1]  # consecutive windows overlap
    for f in feats:
        assert len(f["input_ids"]) <= 48
        ids = f["input_ids"]
        sep = ids.index(tokenizer.sep_token_id)
        assert all(o is None for o in f["offset_mapping"][: sep + 1])  # [CLS] question [SEP]
        assert f["offset_mapping"][-1] is None  # final [SEP]
        assert f["token_type_ids"][sep + 1] == 1
    covered = sorted({tuple(o) for f in feats for o in f["offset_mapping"] if o is not None})
    assert covered[0][0] == 0 and covered[-1][1] == len(long_ex["context"])  # windows cover the context


class ForcedSpans(nn.Module):
    """Stands in for a model: start/end logits one-hot on the gold positions."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, batch):
        b, t = batch["input_ids"].shape
        out = torch.zeros(b, t, 2)
        rows = torch.arange(b)
        out[rows, batch["start_positions"], 0] = 10.0
        out[rows, batch["end_positions"], 1] = 10.0
        return out


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("task", ["qa/squad", "qa/squad_v2"])
def test_every_method_offsets_and_forced_logits(task: str, method: str, tokenizer, monkeypatch):
    monkeypatch.delenv("PTCORE_CACHE_DIR", raising=False)
    cfg = RunConfig(
        task=task, method=method, method_args=method_args(method), data_dir=str(FIXTURES), device="cpu",
        head_dropout=0.0, max_length=48,
    )  # fmt: skip
    spec = get_task(task)
    backbone = tiny_backbone(tokenizer)
    model = build_model(cfg, backbone)
    data = prepare_data(cfg, backbone, model.encoder.extra_tokens)
    limit = 48  # the same input limit for every method: a shallow prompt extends the sequence
    assert data.max_length == limit
    for split, feats in data.features.items():
        examples = data.examples[split]
        found = collections.Counter()
        for f in feats:
            assert len(f["input_ids"]) <= limit
            ex = examples[f["example_index"]]
            if f["start_positions"] == 0:
                assert f["end_positions"] == 0
                continue
            assert 0 < f["start_positions"] <= f["end_positions"]
            assert _span(ex, f, f["start_positions"], f["end_positions"]) == ex["answers"]["text"][0]
            found[f["example_index"]] += 1
        for i, ex in enumerate(examples):  # every answerable question has a window holding its answer
            assert (found[i] > 0) == bool(ex["answers"]["text"])
        loader = make_loader(feats, model.kind, tokenizer.pad_token_id, 8, shuffle=False)
        forced = evaluate(ForcedSpans(model.kind), loader, feats, examples, spec, "cpu")
        assert forced["squad_em"] == forced["squad_f1"] == forced["primary"] == 1.0

    # the long paragraph (in one of the splits) becomes several windows
    assert sum(map(len, data.features.values())) > sum(map(len, data.examples.values()))

    batch = next(iter(make_loader(data.features["train"], model.kind, tokenizer.pad_token_id, 8, shuffle=False)))
    assert isinstance(batch["offset_mapping"], list) and len(batch["offset_mapping"]) == 8
    model.eval()
    logits = model(batch)
    assert logits.shape == (*batch["input_ids"].shape, 2)  # prompts stripped: aligned with the input
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2 if method != "finetune" else 1e-3)
    losses = []
    for _ in range(6):
        loss = model.kind.loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    loader = make_loader(data.features["dev"], model.kind, tokenizer.pad_token_id, 8, shuffle=False)
    scores = evaluate(model, loader, data.features["dev"], data.examples["dev"], spec, "cpu")
    assert 0.0 <= scores["squad_f1"] <= 1.0 and 0.0 <= scores["squad_em"] <= scores["squad_f1"]


# ---------------------------------------------------------------- span selection


def _feature(context: str, n_question: int = 2) -> dict:
    """[CLS] q q [SEP] <one token per context word> [SEP] with word offsets."""
    offsets: list = [None] * (n_question + 2)
    pos = 0
    for word in context.split(" "):
        offsets.append([pos, pos + len(word)])
        pos += len(word) + 1
    return {"offset_mapping": offsets + [None], "example_index": 0}


def _pred(n: int, start: dict, end: dict) -> dict:
    s, e = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    for k, v in start.items():
        s[k] = v
    for k, v in end.items():
        e[k] = v
    return {"start": s, "end": e}


def test_best_span_rules():
    context = "one two three four five"
    feat = _feature(context)  # words at token 4..8
    n = len(feat["offset_mapping"])
    best = ExtractiveQA.best_answer
    # the best valid pair: end before start (8 -> 5) is skipped
    pred = _pred(n, {8: 9.0, 5: 5.0}, {5: 9.0, 6: 4.0})
    assert best([(pred, feat)], context, 20, 30, with_null=False) == "two"
    # spans longer than max_answer_length are skipped
    pred = _pred(n, {4: 9.0, 6: 8.0}, {8: 9.0, 7: 8.0})
    assert best([(pred, feat)], context, 20, 5, with_null=False) == "one two three four five"
    assert best([(pred, feat)], context, 20, 2, with_null=False) == "three four"
    # question / special tokens are never answers
    pred = _pred(n, {1: 20.0, 6: 1.0}, {2: 20.0, 6: 1.0})
    assert best([(pred, feat)], context, 20, 30, with_null=False) == "three"
    # SQuAD 2.0: the [CLS] null score against the best span
    pred = _pred(n, {0: 6.0, 5: 2.0}, {0: 6.0, 5: 2.0})
    assert best([(pred, feat)], context, 20, 30, with_null=True) == ""
    assert best([(pred, feat)], context, 20, 30, with_null=False) == "two"
    pred = _pred(n, {0: 1.0, 5: 2.0}, {0: 1.0, 5: 2.0})
    assert best([(pred, feat)], context, 20, 30, with_null=True) == "two"


def test_best_span_over_windows_uses_min_null():
    context = "one two three four five"
    feat = _feature(context)
    n = len(feat["offset_mapping"])
    window_without = _pred(n, {0: 9.0}, {0: 9.0})  # a window that does not hold the answer
    window_with = _pred(n, {0: 1.0, 7: 5.0}, {0: 1.0, 8: 5.0})
    assert ExtractiveQA.best_answer([(window_without, feat), (window_with, feat)], context, 20, 30, True) == "four five"


# ---------------------------------------------------------------- metrics


def test_squad_normalization():
    assert squad_normalize("The  Quick, brown fox!") == "quick brown fox"
    assert squad_normalize("An apple a day") == "apple day"
    assert squad_normalize("theater") == "theater"  # articles only as whole words
    assert squad_normalize(" 1,000 ") == "1000"


def test_squad_em_f1_hand_computed():
    em, f1 = METRICS.get("squad_em"), METRICS.get("squad_f1")
    assert em(["the Eiffel Tower"], [["Eiffel tower."]]) == 1.0
    # pred {brown, fox, jumps} vs gold {quick, brown, fox}: P = R = 2/3
    assert em(["brown fox jumps"], [["the quick brown fox"]]) == 0.0
    assert f1(["brown fox jumps"], [["the quick brown fox"]]) == pytest.approx(2 / 3)
    # max over the gold answers, mean over questions
    assert f1(["brown fox jumps", "Paris"], [["the quick brown fox", "brown fox"], ["London"]]) == pytest.approx((0.8 + 0.0) / 2)
    assert em(["a", "b", "c", "d"], [["a"], ["b"], ["x"], ["y"]]) == 0.5


def test_squad_v2_no_answer():
    em, f1 = METRICS.get("squad_em"), METRICS.get("squad_f1")
    assert em([""], [[]]) == f1([""], [[]]) == 1.0  # no answer, predicted none
    assert em(["Paris"], [[]]) == f1(["Paris"], [[]]) == 0.0
    assert em([""], [["Paris"]]) == f1([""], [["Paris"]]) == 0.0
    assert f1([""], [["the"]]) == 1.0  # gold answers that normalize to "" count as no answer


# ---------------------------------------------------------------- the real file


@pytest.mark.data
def test_real_squad_v11_dev_split_by_article():
    root = real_data_dir()
    if root is None or not (root / "squad" / "v1.1" / "dev-v1.1.json").is_file():
        pytest.skip("real data directory with squad/v1.1/dev-v1.1.json not found (set PTCORE_DATA_DIR)")
    splits, notes = load_splits(get_task("qa/squad"), data_dir=root)
    assert sum(len(v) for v in splits.values()) == 10570
    titles = {s: {ex["title"] for ex in exs} for s, exs in splits.items()}
    assert len(set().union(*titles.values())) == 48
    assert sum(len(t) for t in titles.values()) == 48  # no article in two splits
    assert {s: len(t) for s, t in titles.items()} == {"train": 34, "dev": 5, "val": 9}
    assert any("by title" in n for n in notes)
