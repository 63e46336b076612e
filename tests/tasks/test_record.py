"""ReCoRD: every val query is kept and scored (a query without a gold candidate is a miss),
the official EM / token F1 (max over gold answers), and training toward every gold
candidate (the set loss over all matching surface forms)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import FIXTURES
from tinymodels import tiny_tokenizer
from ptcore.metrics import METRICS, MetricInputs, score_inputs
from ptcore.tasks import get_task, load_splits
from ptcore.tasks.io import read_records, to_examples
from ptcore.tasks.kinds import gold_set_loss, get_kind
from ptcore.tasks.superglue import record_gold

SPEC = get_task("superglue/record")


def _splits():
    return load_splits(SPEC, data_dir=FIXTURES)


def _features(examples: list[dict]) -> list[dict]:
    return [{"example_index": i} for i in range(len(examples))]


def test_declared_metrics():
    assert SPEC.kind == "multiple_choice"
    assert SPEC.metrics == ("record_f1", "record_em") and SPEC.primary == "record_f1"
    assert all(name in METRICS for name in SPEC.metrics)
    assert SPEC.options["score_text"] and SPEC.train_hook is not None


def test_val_keeps_queries_without_a_gold_candidate():
    val = _splits()[0]["val"]
    assert len(val) == len(json.loads((FIXTURES / "superglue/ReCoRD/val.jsonl").read_text())["qas"]) == 3
    miss = val[2]
    assert miss["answers"] == ["Bianchi"] and miss["entities"] == ["Giulia Rossi", "Marco Bianchi", "Rome"]
    assert miss["gold"] == [] and miss["label"] is None


def test_unmatched_query_scored_as_a_miss():
    val = _splits()[0]["val"]
    kind = get_kind(SPEC.kind)
    # picks: Giulia Rossi (right), Giulia Rossi (gold Marco Bianchi: no shared token),
    # Marco Bianchi for the unmatched query (gold "Bianchi": P 1/2, R 1 -> F1 2/3, EM 0)
    preds = [0, 0, 1]
    inputs = kind.metric_inputs(preds, _features(val), val, SPEC)
    assert inputs == MetricInputs(
        ["Giulia Rossi", "Giulia Rossi", "Marco Bianchi"], [["Giulia Rossi"], ["Marco Bianchi"], ["Bianchi"]], None
    )
    scores = kind.score(preds, _features(val), val, SPEC)
    assert scores == {"record_f1": pytest.approx((1 + 0 + 2 / 3) / 3), "record_em": pytest.approx(1 / 3)}
    assert score_inputs(SPEC.metrics, inputs) == scores


def test_unmatched_query_through_encode_collate_decode(tmp_path):
    """A batch mixing matched and unmatched (label None) queries collates and decodes."""
    val = _splits()[0]["val"]
    kind = get_kind(SPEC.kind)
    tok = tiny_tokenizer(tmp_path)
    feats = kind.encode(val, tok, max_length=64)
    batch = kind.collate(feats, tok.pad_token_id)
    assert "label" not in batch  # one query has no gold choice: no label tensor for the batch
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])
    preds = kind.decode(logits, batch)
    scores = kind.score(preds, feats, val, SPEC)
    assert scores["record_em"] == pytest.approx(2 / 3)  # the unmatched query is a miss
    assert scores["record_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_record_metrics_max_over_golds():
    em, f1 = METRICS.get("record_em"), METRICS.get("record_f1")
    golds = [["Barack Obama", "Obama"], ["Obama"], ["the Fram Museum"], ["Marco Bianchi"]]
    preds = ["Obama", "Barack Obama", "Fram Museum.", "Giulia Rossi"]
    # EM: 1 (matches "Obama"), 0, 1 (article and period normalised away), 0
    assert em(preds, golds) == pytest.approx(2 / 4)
    # F1: 1, "barack obama" vs "obama": P 1/2 R 1 -> 2/3, 1, 0
    assert f1(preds, golds) == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    with pytest.raises(ValueError, match="at least one gold answer"):
        em(["x"], [[]])


def test_gold_candidates_are_every_matching_surface_form():
    assert record_gold(["Angela Merkel", "Barack Obama", "CNN", "Merkel", "Obama"], ["Barack Obama", "Obama"]) == [1, 4]
    assert record_gold(["The Fram Museum", "Oslo"], ["Fram Museum"]) == [0]  # official EM: articles do not count
    assert record_gold(["Marco Bianchi"], ["Bianchi"]) == []


def test_training_uses_every_gold_surface_form():
    splits, notes = _splits()
    obama = [ex for ex in splits["train"] + splits["dev"] if ex["answers"] == ["Barack Obama", "Obama"]]
    assert len(obama) == 1
    ex = obama[0]
    assert [ex["entities"][i] for i in ex["gold"]] == ["Barack Obama", "Obama"] and ex["label"] == ex["gold"][0]


def test_train_drops_only_queries_without_gold_candidate():
    splits, notes = _splits()
    assert all(ex["gold"] for ex in splits["train"])
    file_queries = to_examples(read_records(FIXTURES / "superglue/ReCoRD/train.jsonl", SPEC), SPEC)
    unmatched = [ex for ex in file_queries if not ex["gold"]]
    assert len(file_queries) == 10 and len(unmatched) == 1 and unmatched[0]["answers"] == ["Friday"]
    assert len(splits["train"]) + len(splits["dev"]) == 9
    assert any(n.startswith("train: dropped 1 of ") and "match no candidate" in n for n in notes)


def test_set_loss_trains_toward_all_gold_choices(tmp_path):
    kind = get_kind(SPEC.kind)
    train = [ex for ex in _splits()[0]["train"] if len(ex["gold"]) > 1]
    tok = tiny_tokenizer(tmp_path)
    batch = kind.collate(kind.encode(train, tok, max_length=64), tok.pad_token_id)
    assert batch["gold_mask"].tolist() == [[c in ex["gold"] for c in range(len(ex["choices"]))] for ex in train]
    logits = torch.randn(batch["gold_mask"].shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = kind.loss(logits, batch)
    p = logits.softmax(-1)
    expected = -torch.log((p * batch["gold_mask"]).sum(-1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    # every gold surface form is pushed up, every other candidate down
    assert (logits.grad[batch["gold_mask"]] < 0).all() and (logits.grad[~batch["gold_mask"]] > 0).all()


def test_set_loss_with_one_gold_is_cross_entropy():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 4, 1])
    mask = F.one_hot(labels, 5).bool()
    assert gold_set_loss(logits, mask).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    mask[1] = False  # a row without a gold choice carries no signal
    keep = torch.tensor([0, 2, 3])
    assert gold_set_loss(logits, mask).item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep]).item(), rel=1e-6)


def test_copa_loss_unchanged():
    """Multiple choice without gold sets (COPA) keeps plain cross-entropy on ``label``."""
    kind = get_kind("multiple_choice")
    logits = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    batch = {"label": torch.tensor([1, 0, 1])}
    assert torch.equal(kind.loss(logits, batch), F.cross_entropy(logits, batch["label"]))


def test_hub_record_with_unmatched_answer_is_kept():
    hub = {
        "passage": "Rome -- Giulia Rossi won.\n@highlight\nRossi wins",
        "query": "@placeholder won the race.",
        "entities": ["Giulia Rossi", "Rome"],
        "answers": ["Rossi"],
        "idx": {"passage": 0, "query": 0},
    }
    (ex,) = to_examples([hub], SPEC)
    assert ex["gold"] == [] and ex["label"] is None and ex["answers"] == ["Rossi"]
