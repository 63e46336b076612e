"""``Kind.metric_inputs``: per-item metric inputs for every task kind, plain JSON, and
``score_inputs`` over them equal to ``score()`` and to the scores computed before the API
existed (the formulas below are the pre-API ``score`` bodies)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import FIXTURES
from tinymodels import tiny_tokenizer
from ptcore.data import make_loader
from ptcore.metrics import MetricInputs, compute, score_inputs
from ptcore.tasks import get_task, load_splits
from ptcore.tasks.kinds import get_kind

# task -> the split scored (one task per kind, plus MultiRC's groups, ReCoRD's text
# scoring and SQuAD 2.0's no-answers)
TASKS = {
    "superglue/cb": "val",
    "superglue/multirc": "val",
    "glue/stsb": "val",
    "superglue/copa": "val",
    "superglue/record": "val",
    "ner/wnut17": "test",
    "qa/squad": "val",
    "qa/squad_v2": "val",
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _examples(name: str) -> list[dict]:
    examples = load_splits(get_task(name), data_dir=FIXTURES)[0][TASKS[name]]
    if name == "ner/wnut17":  # an unlabelled sentence is not an item
        examples = examples + [{"tokens": ["no", "tags"], "tags": None, "tag_ids": None}]
    return examples


def _random_logits(kind_name: str, batch: dict, spec, g: torch.Generator) -> torch.Tensor:
    """Logits shaped and masked as the model's for this kind."""
    b = batch["input_ids"].shape[0]
    if kind_name == "classification":
        return torch.randn(b, spec.num_labels, generator=g)
    if kind_name == "regression":
        return torch.rand(b, generator=g) * 5
    if kind_name == "multiple_choice":
        return torch.randn(batch["choice_mask"].shape, generator=g).masked_fill(~batch["choice_mask"], -1e4)
    t = batch["input_ids"].shape[1]
    if kind_name == "token_classification":
        return torch.randn(b, t, spec.num_labels, generator=g)
    out = torch.randn(b, t, 2, generator=g) * 3  # extractive_qa
    return out.masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, -1e4)


def _predict(name: str, tokenizer, seed: int = 0):
    spec, examples = get_task(name), _examples(name)
    kind = get_kind(spec.kind)
    features = kind.encode(examples, tokenizer, max_length=96)
    g = torch.Generator().manual_seed(seed)
    preds: list = []
    for batch in make_loader(features, kind, tokenizer.pad_token_id, batch_size=4, shuffle=False):
        preds.extend(kind.decode(_random_logits(spec.kind, batch, spec, g), batch))
    return spec, kind, preds, features, examples


def _legacy_score(spec, kind, preds, features, examples) -> dict[str, float]:
    """``score`` as written before ``metric_inputs`` (ReCoRD excepted: its metrics changed)."""
    if spec.kind in ("classification", "regression", "multiple_choice"):
        refs = [examples[f["example_index"]]["label"] for f in features]
        groups = [examples[f["example_index"]].get("group") for f in features]
        return compute(spec.metrics, preds, refs, groups=groups)
    if spec.kind == "token_classification":
        predicted, gold = [], []
        for p, f in zip(preds, features):
            ex = examples[f["example_index"]]
            if ex.get("tags") is None:
                continue
            seq = ["O"] * len(ex["tokens"])
            for w, t in enumerate(p[: len(seq)]):
                if t >= 0:
                    seq[w] = spec.labels[t]
            predicted.append(seq)
            gold.append(list(ex["tags"]))
        return compute(spec.metrics, predicted, gold) if gold else {m: math.nan for m in spec.metrics}
    answers = kind.predict(preds, features, examples, spec)
    indices = sorted(answers)
    return compute(spec.metrics, [answers[i] for i in indices], [examples[i]["answers"]["text"] for i in indices])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_score_inputs_equals_score(name: str, tokenizer):
    spec, kind, preds, features, examples = _predict(name, tokenizer)
    inputs = kind.metric_inputs(preds, features, examples, spec)
    assert isinstance(inputs, MetricInputs)
    scores = kind.score(preds, features, examples, spec)
    assert set(scores) == set(spec.metrics)
    assert score_inputs(spec.metrics, inputs) == scores
    assert compute(spec.metrics, *inputs) == scores
    if spec.name != "superglue/record":
        assert scores == _legacy_score(spec, kind, preds, features, examples)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_metric_inputs_are_json_and_rescore(name: str, tokenizer):
    spec, kind, preds, features, examples = _predict(name, tokenizer, seed=1)
    inputs = kind.metric_inputs(preds, features, examples, spec)
    text = json.dumps(inputs.as_dict())  # plain JSON, no numpy / tensors
    back = MetricInputs.from_dict(json.loads(text))
    assert back == inputs
    assert score_inputs(spec.metrics, back) == kind.score(preds, features, examples, spec)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_one_item_per_unit(name: str, tokenizer):
    spec, kind, preds, features, examples = _predict(name, tokenizer, seed=2)
    inputs = kind.metric_inputs(preds, features, examples, spec)
    if spec.kind == "token_classification":  # one item per labelled sentence, gold length
        labelled = [ex for ex in examples if ex["tags"] is not None]
        assert inputs.references == [ex["tags"] for ex in labelled]
        assert [len(p) for p in inputs.predictions] == [len(ex["tags"]) for ex in labelled]
    elif spec.kind == "extractive_qa":  # one item per question, however many windows
        if spec.name == "qa/squad":  # its long contexts become several windows at 96 tokens
            assert len(features) > len(examples)
        assert inputs.references == [ex["answers"]["text"] for ex in examples]
        assert all(isinstance(p, str) for p in inputs.predictions)
    elif spec.name == "superglue/record":  # one item per query: chosen entity vs gold strings
        assert inputs.references == [ex["answers"] for ex in examples]
        assert inputs.predictions == [ex["entities"][p] for ex, p in zip(examples, preds)]
    else:
        assert len(inputs) == len(examples) and inputs.references == [ex["label"] for ex in examples]
    if spec.name == "superglue/multirc":  # resampling unit: the question
        assert inputs.groups == [ex["group"] for ex in examples]
    else:
        assert inputs.groups is None


def test_metric_inputs_reject_ragged_lists():
    with pytest.raises(ValueError, match="one entry per item; got 2 predictions, 1 references"):
        MetricInputs([0, 1], [1])
    with pytest.raises(ValueError, match="3 groups"):
        MetricInputs([0, 1], [1, 1], ["a", "b", "c"])


def test_clusters_ride_beside_groups():
    """``clusters`` (each item's passage) is stored and read back, checked for length, and left
    out of the stored dict where the task has no passages; metrics never see it."""
    with pytest.raises(ValueError, match="1 clusters"):
        MetricInputs([0, 1], [1, 1], ["a", "a"], ["p0"])
    plain = MetricInputs([0, 1], [1, 1], ["a", "b"])
    assert "clusters" not in plain.as_dict() and MetricInputs.from_dict(plain.as_dict()) == plain
    with_clusters = MetricInputs([0, 1], [1, 1], ["a", "b"], ["p0", "p0"])
    assert with_clusters.as_dict()["clusters"] == ["p0", "p0"] and MetricInputs.from_dict(with_clusters.as_dict()) == with_clusters
    assert list(with_clusters) == [[0, 1], [1, 1], ["a", "b"]]  # compute(names, *inputs): three arguments still


def test_passage_ids_of_the_passage_tasks():
    """MultiRC: the paragraph idx; ReCoRD: the article idx; BoolQ (no passage id): a digest of the
    passage text, equal for questions about one passage; tasks without passages: None."""
    from ptcore.tasks.io import passage_ids

    multirc = load_splits(get_task("superglue/multirc"), data_dir=FIXTURES)[0]["val"]
    assert passage_ids(multirc, get_task("superglue/multirc")) == ["0"] * len(multirc)
    record = load_splits(get_task("superglue/record"), data_dir=FIXTURES)[0]["val"]
    assert passage_ids(record, get_task("superglue/record")) == ["0"] * len(record)
    boolq = load_splits(get_task("superglue/boolq"), data_dir=FIXTURES)[0]["val"]
    ids = passage_ids(boolq, get_task("superglue/boolq"))
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    by_text = {}
    for ex, i in zip(boolq, ids):
        by_text.setdefault(ex["text_a"], set()).add(i)
    assert all(len(v) == 1 for v in by_text.values()) and len(set(ids)) == len(by_text) < len(boolq)
    assert passage_ids(load_splits(get_task("superglue/cb"), data_dir=FIXTURES)[0]["val"], get_task("superglue/cb")) is None
