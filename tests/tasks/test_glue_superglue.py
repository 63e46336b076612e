"""GLUE / SuperGLUE task declarations against hand-written fixtures in the official formats."""

from __future__ import annotations

import collections
import json
import os
import shutil
from pathlib import Path

import pytest

from ptcore.errors import DataError
from ptcore.metrics import compute
from ptcore.tasks import TASKS, get_task, load_splits
from ptcore.tasks.base import TaskSpec
from ptcore.tasks.io import CARVE_FRACTIONS, read_records, to_examples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
REPO = Path(__file__).resolve().parents[2]

# task -> (answer options / rows in the fixture's train file, in its val file)
FIXTURE_COUNTS = {
    "superglue/boolq": (11, 9),  # 3 questions in each file share a passage with another
    "superglue/cb": (9, 6),
    "superglue/copa": (8, 6),
    "superglue/rte": (8, 6),
    "superglue/wic": (8, 6),
    "superglue/wsc": (8, 6),
    "superglue/multirc": (12, 8),
    "glue/cola": (10, 6),
    "glue/sst2": (8, 6),
    "glue/mrpc": (8, 6),
    "glue/qqp": (8, 6),
    "glue/stsb": (8, 6),
    "glue/mnli": (9, 6),
    "glue/mnli_mismatched": (9, 6),
    "glue/qnli": (8, 6),
    "glue/rte": (8, 6),
    "glue/wnli": (8, 6),
}
BENCHMARK_TASKS = [n for n in TASKS.names() if n.split("/")[0] in ("glue", "superglue") and n != "superglue/record"]


def _file_examples(spec: TaskSpec, role: str, data_dir: Path = FIXTURES) -> list[dict]:
    """The examples of one file, read directly (no splitting)."""
    return to_examples(read_records(data_dir / spec.local.path / spec.local.files[role], spec), spec)


def _multiset(examples: list[dict]) -> collections.Counter:
    return collections.Counter(json.dumps(ex, sort_keys=True) for ex in examples)


def _check_example(ex: dict, spec: TaskSpec) -> None:
    if spec.kind == "multiple_choice":
        assert set(ex) == {"id", "text_a", "choices", "label"}
        assert all(isinstance(c, str) and c for c in ex["choices"])
        assert isinstance(ex["label"], int) and 0 <= ex["label"] < len(ex["choices"])
    else:
        assert {"id", "text_a", "label"} <= set(ex) <= {"id", "text_a", "text_b", "label", "group", "passage"}
        if spec.kind == "regression":
            assert isinstance(ex["label"], float)
        else:
            assert isinstance(ex["label"], int) and 0 <= ex["label"] < spec.num_labels
    assert isinstance(ex["text_a"], str) and ex["text_a"].strip()
    if "text_b" in ex:
        assert isinstance(ex["text_b"], str) and ex["text_b"].strip()


def test_every_benchmark_task_has_a_fixture():
    assert sorted(FIXTURE_COUNTS) == BENCHMARK_TASKS


@pytest.mark.parametrize("name", BENCHMARK_TASKS)
def test_fixture_loads(name: str):
    spec = get_task(name)
    assert spec.description and "\n" not in spec.description
    splits, notes = load_splits(spec, data_dir=FIXTURES)
    n_train, n_val = FIXTURE_COUNTS[name]

    assert set(splits) == {"train", "dev", "val"}
    assert len(splits["train"]) + len(splits["dev"]) == n_train
    assert len(splits["dev"]) >= 1 and len(splits["val"]) == n_val
    assert any("dev =" in n for n in notes)
    for ex in (ex for split in splits.values() for ex in split):
        _check_example(ex, spec)

    # train + dev partition the official train file; val *is* the official validation file
    assert _multiset(splits["train"]) + _multiset(splits["dev"]) == _multiset(_file_examples(spec, "train"))
    assert splits["val"] == _file_examples(spec, "val")

    # the fixtures cover every label in both files
    if spec.kind == "classification":
        for file_examples in (splits["train"] + splits["dev"], splits["val"]):
            assert {ex["label"] for ex in file_examples} == set(range(spec.num_labels))


def test_dev_split_is_fixed():
    spec = get_task("glue/sst2")
    first, _ = load_splits(spec, data_dir=FIXTURES)
    second, _ = load_splits(spec, data_dir=FIXTURES)
    assert first == second


# ---------------------------------------------------------------- SuperGLUE specifics


def test_boolq_passage_then_question():
    ex = load_splits(get_task("superglue/boolq"), data_dir=FIXTURES)[0]["val"][0]
    assert ex["text_a"].startswith("Sun -- ") and ex["text_b"] == "is the sun a star" and ex["label"] == 1


def test_boolq_without_train_file_is_carved_from_val(tmp_path: Path):
    (tmp_path / "superglue" / "BoolQ").mkdir(parents=True)
    shutil.copy(FIXTURES / "superglue/BoolQ/val.jsonl", tmp_path / "superglue/BoolQ/val.jsonl")
    splits, notes = load_splits(get_task("superglue/boolq"), data_dir=tmp_path)
    # 60/10/30 of the 6 passages, rounded: 4 / 1 / 1 passages (9 questions)
    assert [len({ex["text_a"] for ex in splits[s]}) for s in ("train", "dev", "val")] == [4, 1, 1]
    assert any("carved 60/10/30 by passage (whole passages" in n for n in notes)
    merged = splits["train"] + splits["dev"] + splits["val"]
    assert _multiset(merged) == _multiset(_file_examples(get_task("superglue/boolq"), "val"))


def test_cb_metrics_and_labels():
    spec = get_task("superglue/cb")
    assert spec.labels == ("entailment", "contradiction", "neutral")
    assert spec.metrics == ("accuracy", "macro_f1") and spec.primary == "accuracy"
    val = load_splits(spec, data_dir=FIXTURES)[0]["val"]
    assert [ex["label"] for ex in val] == [0, 1, 2, 0, 1, 2]


def test_copa_choices_and_connective():
    val = load_splits(get_task("superglue/copa"), data_dir=FIXTURES)[0]["val"]
    assert val[0] == {
        "text_a": "The ice cream melted. What was the cause?",
        "choices": ["It was left in the sun.", "It was kept in the freezer."],
        "label": 0,
        "id": 0,  # the record's idx
    }
    assert val[1]["text_a"] == "The dog barked. What happened as a result?"
    assert val[1]["choices"][val[1]["label"]] == "The neighbour looked outside."


def test_copa_rejects_unknown_question():
    spec = get_task("superglue/copa")
    bad = {"premise": "p.", "choice1": "a", "choice2": "b", "question": "why", "label": 0, "idx": 0}
    with pytest.raises(DataError, match="cause' or 'effect"):
        to_examples([bad], spec)


def test_wic_word_prefix():
    train = _file_examples(get_task("superglue/wic"), "train")
    assert train[0] == {
        "text_a": "bank: He sat on the bank of the river.",
        "text_b": "The bank raised its rates.",
        "label": 0,
        "id": 0,
    }
    assert train[1]["label"] == 1


def test_wsc_span_markup():
    spec = get_task("superglue/wsc")
    texts = [ex["text_a"] for ex in _file_examples(spec, "train") + _file_examples(spec, "val")]
    assert texts[0] == "*Sam* told Ben a joke, and #he# laughed."
    assert texts[1] == "Sam told *Ben* a joke, and #he# laughed."
    # span text "her." (with its period, as in the official files): punctuation stays outside the mark
    assert texts[5] == "*Anna* thanked Lucy because she had helped #her#."
    assert texts[6] == "*The city councilmen* refused the demonstrators a permit because #they# feared violence."
    assert texts[8] == "*The cat* chased the mouse until #it# got tired."
    assert texts[8 + 4] == "The ball broke *the window*, so Kim repaired #it#."
    assert texts[8 + 5] == "*Tina's sister* drove because #she# had a licence."


def test_wsc_hub_record_matches_official():
    spec = get_task("superglue/wsc")
    official = json.loads((FIXTURES / "superglue/WSC/train.jsonl").read_text().splitlines()[2])
    hub = {"text": official["text"], **official["target"], "idx": 2, "label": 1}
    assert to_examples([hub], spec) == to_examples([official], spec)


def test_wsc_span_outside_text():
    spec = get_task("superglue/wsc")
    bad = {"text": "He ran.", "span1_index": 5, "span1_text": "Bob", "span2_index": 0, "span2_text": "He", "label": 0}
    with pytest.raises(DataError, match="outside the text"):
        to_examples([bad], spec)


def test_multirc_flattening_and_groups():
    spec = get_task("superglue/multirc")
    splits, _ = load_splits(spec, data_dir=FIXTURES)
    val = splits["val"]
    assert val[0] == {
        "text_a": "Omar baked bread every morning. He sold it at the market and gave the rest to the shelter.",
        "text_b": "When did Omar bake? Every morning",
        "label": 1,
        "group": "0-0",
        "passage": "0",  # the paragraph idx: sampling's and the bootstrap's unit
        "id": "0-0-0",  # paragraph-question-answer idx
    }
    assert [ex["group"] for ex in val] == ["0-0"] * 2 + ["0-1"] * 3 + ["0-2"] * 3
    # question idx run on through the file: the second paragraph's first question is 3
    train_groups = {ex["group"] for ex in splits["train"] + splits["dev"]}
    assert train_groups == {"0-0", "0-1", "0-2", "1-3", "1-4"}
    # carving keeps each question's answer options together
    assert not {ex["group"] for ex in splits["train"]} & {ex["group"] for ex in splits["dev"]}


def test_multirc_em_over_groups():
    spec = get_task("superglue/multirc")
    val = load_splits(spec, data_dir=FIXTURES)[0]["val"]
    refs = [ex["label"] for ex in val]
    groups = [ex["group"] for ex in val]
    assert compute(spec.metrics, refs, refs, groups) == {"f1a": 1.0, "em": 1.0}
    preds = list(refs)
    preds[3] = 1 - preds[3]  # one wrong option in question 0-1 -> 2 of 3 questions exact
    scores = compute(spec.metrics, preds, refs, groups)
    assert scores["em"] == pytest.approx(2 / 3)
    assert scores["f1a"] < 1.0


def test_multirc_hub_record():
    spec = get_task("superglue/multirc")
    hub = {"paragraph": "P.", "question": "Q?", "answer": "A", "idx": {"paragraph": 4, "question": 9, "answer": 30}, "label": 0}
    assert to_examples([hub], spec) == [{"text_a": "P.", "text_b": "Q? A", "label": 0, "group": "4-9", "passage": "4", "id": "4-9-30"}]


def test_multirc_strips_sentence_markup():
    spec = get_task("superglue/multirc")
    rec = {
        "idx": 0,
        "passage": {
            "text": "<b>Sent 1: </b>It rained.<br><b>Sent 2: </b>We stayed in.<br>",
            "questions": [{"question": "Why?", "idx": 0, "answers": [{"text": "Rain", "idx": 0, "label": 1}]}],
        },
    }
    assert to_examples([rec], spec)[0]["text_a"] == "It rained. We stayed in."


def test_record_official_and_hub_formats():
    spec = get_task("superglue/record")
    splits, _ = load_splits(spec, data_dir=FIXTURES)
    # 10 training queries, one without a gold candidate (dropped from train); val keeps all 3
    assert len(splits["train"]) + len(splits["dev"]) == 9 and len(splits["val"]) == 3
    ex = splits["val"][0]
    assert "@highlight" not in ex["text_a"] and "@placeholder" not in " ".join(ex["choices"])
    assert ex["choices"] == [f"{e} came first in the race." for e in ("Giulia Rossi", "Marco Bianchi", "Rome")]
    assert ex["entities"] == ["Giulia Rossi", "Marco Bianchi", "Rome"] and ex["answers"] == ["Giulia Rossi"]
    assert ex["label"] == 0 and ex["gold"] == [0]
    rec = json.loads((FIXTURES / "superglue/ReCoRD/val.jsonl").read_text())
    text = rec["passage"]["text"]
    hub = {
        "passage": text,
        "query": rec["qas"][1]["query"],
        "entities": sorted(text[e["start"] : e["end"] + 1] for e in rec["passage"]["entities"]),
        "answers": ["Marco Bianchi"],
        "idx": {"passage": 0, "query": 1},
    }
    assert to_examples([hub], spec) == [{**splits["val"][1], "id": "0-1"}]  # the fixture's query idx is "q1"
    assert splits["val"][1]["id"] == "0-q1"
    assert splits["val"][1]["label"] == 1


# ---------------------------------------------------------------- GLUE specifics


def test_cola_has_no_header():
    spec = get_task("glue/cola")
    assert not spec.local.header
    assert spec.metrics == ("mcc", "accuracy") and spec.primary == "mcc"
    train = _file_examples(spec, "train")
    assert train[0] == {"text_a": "The cat sat on the mat.", "label": 1, "id": 0}  # the first row is data
    assert train[1]["label"] == 0
    assert train[6]["text_a"] == 'They said "hello" to us.'  # bare quotes survive
    assert len(_file_examples(spec, "val")) == 6  # no trailing newline, last row kept


def test_sst2_quotes_and_labels():
    train = _file_examples(get_task("glue/sst2"), "train")
    assert train[6] == {"text_a": 'an " instant classic " indeed ', "label": 1, "id": 6}  # no id column: the row


def test_mrpc_bom_header():
    spec = get_task("glue/mrpc")
    assert (FIXTURES / "glue/MRPC/train.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    train = _file_examples(spec, "train")
    assert train[0]["label"] == 1 and train[0]["text_b"] == "The company said it made a $2 million profit."
    assert spec.primary == "f1"


def test_stsb_float_scores():
    spec = get_task("glue/stsb")
    assert spec.kind == "regression" and spec.labels == () and spec.primary == "pearson"
    val = load_splits(spec, data_dir=FIXTURES)[0]["val"]
    assert [ex["label"] for ex in val] == [5.0, 2.4, 0.2, 4.6, 4.0, 0.0]


def test_mnli_matched_and_mismatched():
    matched, mismatched = get_task("glue/mnli"), get_task("glue/mnli_mismatched")
    assert matched.local.path == mismatched.local.path == "glue/MNLI"
    assert matched.local.files["val"] == "dev_matched.tsv"
    assert mismatched.local.files["val"] == "dev_mismatched.tsv"
    m, _ = load_splits(matched, data_dir=FIXTURES)
    mm, _ = load_splits(mismatched, data_dir=FIXTURES)
    assert m["train"] == mm["train"] and m["dev"] == mm["dev"]
    assert m["val"][0]["text_a"] == "The novel ends in a small village."
    assert mm["val"][0]["text_a"] == "Dear Sir, we thank you for your gift."
    assert [ex["label"] for ex in mm["val"]] == [0, 2, 1, 0, 2, 1]  # entailment, contradiction, neutral
    assert mismatched.hub is not None and mismatched.hub.splits["val"] == "validation_mismatched"


@pytest.mark.parametrize(
    "name, hub_record, expected",
    [
        ("glue/cola", {"sentence": "A b.", "label": 1, "idx": 0}, {"text_a": "A b.", "label": 1, "id": 0}),
        (
            "glue/mrpc",
            {"sentence1": "x", "sentence2": "y", "label": 0, "idx": 0},
            {"text_a": "x", "text_b": "y", "label": 0, "id": 0},
        ),
        (
            "glue/qqp",
            {"question1": "x?", "question2": "y?", "label": 1, "idx": 0},
            {"text_a": "x?", "text_b": "y?", "label": 1, "id": 0},
        ),
        (
            "glue/stsb",
            {"sentence1": "x", "sentence2": "y", "label": 3.5, "idx": 0},
            {"text_a": "x", "text_b": "y", "label": 3.5, "id": 0},
        ),
        (
            "glue/mnli",
            {"premise": "x", "hypothesis": "y", "label": 2, "idx": 0},
            {"text_a": "x", "text_b": "y", "label": 2, "id": 0},
        ),
        (
            "superglue/copa",
            {"premise": "P.", "choice1": "a", "choice2": "b", "question": "effect", "label": 1, "idx": 0},
            {"text_a": "P. What happened as a result?", "choices": ["a", "b"], "label": 1, "id": 0},
        ),
        (
            "superglue/boolq",
            {"question": "q", "passage": "p", "label": 1, "idx": 0},
            {"text_a": "p", "text_b": "q", "label": 1, "id": 0},
        ),
    ],
)
def test_hub_shaped_records(name: str, hub_record: dict, expected: dict):
    """Records as the hub stores them map to the same examples as the official files."""
    assert to_examples([hub_record], get_task(name)) == [expected]


# ---------------------------------------------------------------- registry and errors


def test_names_and_did_you_mean():
    assert get_task("SuperGLUE/CB") is get_task("superglue/cb")
    with pytest.raises(KeyError) as info:
        get_task("superglue/bolq")
    assert "did you mean 'superglue/boolq'" in str(info.value)


def test_missing_file_names_expected_path(tmp_path: Path):
    with pytest.raises(DataError) as info:
        load_splits(get_task("glue/qqp"), data_dir=tmp_path)
    assert str(tmp_path / "glue" / "QQP" / "train.tsv") in str(info.value)


def test_missing_data_dir(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(get_task("glue/rte"), data_dir=tmp_path / "nope")


# ---------------------------------------------------------------- real data (PROVENANCE.md)

REAL_DATA = Path(os.environ.get("PTCORE_DATA_DIR") or REPO / ".." / "shared" / "data").resolve()

# task -> (official train size, official val size, val label counts by index); BoolQ has
# no train file offline, so its single count is the whole validation file
REAL_COUNTS = {
    "superglue/cb": (250, 56, [23, 28, 5]),
    "superglue/rte": (2490, 277, [146, 131]),
    "superglue/copa": (400, 100, [55, 45]),
    "superglue/multirc": (27243, 4848, [2773, 2075]),
    "superglue/boolq": (None, 3270, [1237, 2033]),  # labels counted over all three parts
    "glue/sst2": (67349, 872, [428, 444]),
    "glue/cola": (8551, 1043, [322, 721]),
    "glue/rte": (2490, 277, [146, 131]),
}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_real_data_counts(name: str):
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data directory {REAL_DATA} is absent (set PTCORE_DATA_DIR)")
    spec = get_task(name)
    if not any((REAL_DATA / spec.local.path / f).is_file() for f in spec.local.files.values()):
        pytest.skip(f"{name}: no files under {REAL_DATA / spec.local.path}")
    n_train, n_val, val_label_counts = REAL_COUNTS[name]
    splits, notes = load_splits(spec, data_dir=REAL_DATA)
    for ex in (ex for split in splits.values() for ex in split):
        _check_example(ex, spec)

    if n_train is None:  # only the validation file: carved 60/10/30 by passage
        merged = splits["train"] + splits["dev"] + splits["val"]
        assert len(merged) == n_val
        # fractions count passages: example counts are near, not equal to, 60/10/30
        assert abs(len(splits["train"]) - CARVE_FRACTIONS[0] * n_val) < 0.02 * n_val
        assert abs(len(splits["dev"]) - CARVE_FRACTIONS[1] * n_val) < 0.02 * n_val
        assert any("carved" in n and "by passage" in n for n in notes)
        passages = [{ex["text_a"] for ex in splits[s]} for s in ("train", "dev", "val")]
        assert not (passages[0] & passages[1] or passages[0] & passages[2] or passages[1] & passages[2])
        labels = collections.Counter(ex["label"] for ex in merged)
    else:
        assert len(splits["train"]) + len(splits["dev"]) == n_train
        assert len(splits["val"]) == n_val
        labels = collections.Counter(ex["label"] for ex in splits["val"])
    assert [labels[i] for i in range(len(val_label_counts))] == val_label_counts

    if name == "superglue/multirc":
        assert len({ex["group"] for ex in splits["train"] + splits["dev"]}) == 5131
        assert len({ex["group"] for ex in splits["val"]}) == 953
        assert not {ex["group"] for ex in splits["train"]} & {ex["group"] for ex in splits["dev"]}
        # carved by paragraph: 10% of the 456 paragraphs, near 10% of the answer options
        assert not {ex["text_a"] for ex in splits["train"]} & {ex["text_a"] for ex in splits["dev"]}
        assert len({ex["text_a"] for ex in splits["dev"]}) == round(0.1 * 456)
        assert 0.07 < len(splits["dev"]) / n_train < 0.13
