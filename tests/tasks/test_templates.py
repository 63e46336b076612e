"""Text-to-text formats (ptcore.tasks.templates): the declared T5-style templates and label
words render the exact strings T5's preprocessing would, every declaration renders its
examples (fixtures, and the real data where present), and misdeclarations fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES, real_data_dir
from ptcore.errors import ConfigError, DataError
from ptcore.tasks import TASKS, get_task
from ptcore.tasks.base import TaskSpec
from ptcore.tasks.io import read_records, to_examples
from ptcore.tasks.kinds import kind_class
from ptcore.tasks.templates import (
    TARGET_RULES,
    gold_texts,
    label_targets,
    render_input,
    train_target,
    with_overrides,
)

# every task that can be trained by verbalizer; ReCoRD's targets are per-example entities
VERBALIZED = sorted(
    n for n in TASKS.names() if kind_class(get_task(n).kind).has_label_set and n != "superglue/record"
)
TEMPLATED = sorted(n for n in TASKS.names() if get_task(n).template is not None)


def _examples(name: str, records: list[dict]) -> list[dict]:
    """Raw records in the task's official format -> its examples (through its hook)."""
    return to_examples(records, get_task(name))


def _first_val_example(name: str, data_dir: Path) -> dict:
    spec = get_task(name)
    path = data_dir / spec.local.path / spec.local.files["val"]
    return to_examples(read_records(path, spec), spec)[0]


def _one_line_config_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert excinfo.type is ConfigError and "\n" not in message
    return message


# ---------------------------------------------------------------- exact renderings (T5's preprocessors)

EXACT = [
    (
        "superglue/cb",
        {"premise": "He said the door was open.", "hypothesis": "the door was open", "label": "neutral", "idx": 3},
        "cb hypothesis: the door was open premise: He said the door was open.",
        "neutral",
    ),
    (
        "superglue/boolq",
        {"question": "is ice cold", "passage": "Ice -- Ice is frozen water.", "idx": 1, "label": False},
        "boolq passage: Ice -- Ice is frozen water. question: is ice cold",
        "False",
    ),
    (
        "glue/sst2",
        {"sentence": "a bright , clever comedy", "label": "1"},
        "sst2 sentence: a bright , clever comedy",
        "positive",
    ),
    (
        "superglue/copa",
        {"premise": "The dog barked.", "choice1": "The cat slept.", "choice2": "A man looked outside.",
         "question": "effect", "label": 1, "idx": 1},
        "copa choice1: The cat slept. choice2: A man looked outside. premise: The dog barked. What happened as a result?",
        "choice2",
    ),
    (
        "qa/squad",
        {"id": "q1", "title": "Velda", "question": "Where does the Velda rise?",
         "context": "The Velda rises in the northern hills.",
         "answers": {"text": ["the northern hills", "northern hills"], "answer_start": [19, 23]}},
        "question: Where does the Velda rise? context: The Velda rises in the northern hills.",
        "the northern hills",
    ),
]


@pytest.mark.parametrize("name, record, expected_input, expected_target", EXACT, ids=[e[0] for e in EXACT])
def test_exact_rendering(name: str, record: dict, expected_input: str, expected_target: str):
    spec = get_task(name)
    (ex,) = _examples(name, [record])
    assert render_input(spec, ex) == expected_input
    assert train_target(spec, ex) == expected_target
    assert spec.template_source.startswith("T5 preprocessors.")


def test_label_words_follow_each_specs_label_order():
    """The words are the tfds label names, in *our* label index order."""
    assert label_targets(get_task("superglue/cb")) == ("entailment", "contradiction", "neutral")
    assert get_task("superglue/cb").labels == ("entailment", "contradiction", "neutral")
    assert label_targets(get_task("glue/mnli")) == ("entailment", "neutral", "contradiction")
    assert get_task("glue/mnli").labels == ("entailment", "neutral", "contradiction")
    assert label_targets(get_task("glue/cola")) == ("unacceptable", "acceptable")  # tsv "0", "1"
    assert label_targets(get_task("glue/wnli")) == ("not_entailment", "entailment")  # GLUE's WNLI 1 = entailment
    assert label_targets(get_task("superglue/multirc")) == ("False", "True")  # labels (0, 1)
    assert label_targets(get_task("superglue/copa")) == ("choice1", "choice2")


def test_nli_templates_put_hypothesis_first():
    """T5 sorts the feature keys: hypothesis before premise, sentence1 before sentence2."""
    (ex,) = _examples("glue/mnli", [{"sentence1": "P.", "sentence2": "H.", "gold_label": "contradiction"}])
    assert render_input(get_task("glue/mnli"), ex) == "mnli hypothesis: H. premise: P."
    assert train_target(get_task("glue/mnli"), ex) == "contradiction"
    (ex,) = _examples("glue/rte", [{"sentence1": "A.", "sentence2": "B.", "label": "not_entailment"}])
    assert render_input(get_task("glue/rte"), ex) == "rte sentence1: A. sentence2: B."
    (ex,) = _examples("superglue/rte", [{"premise": "A.", "hypothesis": "B.", "label": "entailment", "idx": 0}])
    assert render_input(get_task("superglue/rte"), ex) == "rte hypothesis: B. premise: A."


# ---------------------------------------------------------------- every declaration


def test_every_label_set_task_declares_a_format():
    """Every classification / multiple-choice task but ReCoRD has a template and label words;
    regression (STS-B), NER and ReCoRD have no verbalizer."""
    assert "glue/stsb" not in VERBALIZED and "superglue/copa" in VERBALIZED
    for name in VERBALIZED:
        spec = get_task(name)
        assert spec.template and spec.verbalizer and spec.template_source, name
    declared = {n for n in TASKS.names() if get_task(n).verbalizer}
    assert declared == set(VERBALIZED)
    assert {n for n in TASKS.names() if get_task(n).target} == {"qa/squad", "qa/squad_v2"}


@pytest.mark.parametrize("name", VERBALIZED)
def test_one_word_per_label(name: str):
    spec = get_task(name)
    words = label_targets(spec)
    n = spec.num_labels if spec.labels else 2  # COPA: two choices
    assert len(words) == n == len(set(words)) and all(w.strip() for w in words)


@pytest.mark.parametrize("name", TEMPLATED)
def test_renders_its_fixture_examples(name: str):
    spec = get_task(name)
    path = FIXTURES / spec.local.path / spec.local.files["val"]
    for ex in to_examples(read_records(path, spec), spec):
        text = render_input(spec, ex)
        prefix = spec.template.split("{", 1)[0]  # the literal text before the first field
        assert text.startswith(prefix) and len(text) > len(prefix)
        target = train_target(spec, ex)
        if spec.verbalizer:
            assert target in spec.verbalizer
        else:
            assert target in gold_texts(spec, ex) or (target == "" and gold_texts(spec, ex) == [])


@pytest.mark.parametrize("name", TEMPLATED)
def test_renders_its_first_real_example(name: str):
    root = real_data_dir()
    if root is None:
        pytest.skip("real benchmark data not found (set PTCORE_DATA_DIR or put it at ../shared/data)")
    spec = get_task(name)
    path = root / spec.local.path / spec.local.files["val"]
    if not path.is_file():
        pytest.skip(f"{name}: no real validation file at {path}")
    ex = _first_val_example(name, root)
    text = render_input(spec, ex)
    assert text.startswith(spec.template.split("{", 1)[0]) and len(text) > len(spec.template.split("{", 1)[0])
    assert train_target(spec, ex)


# ---------------------------------------------------------------- generation (SQuAD)


def test_squad_targets_first_answer_scores_all():
    spec = get_task("qa/squad")
    assert spec.target == "answers" and "answers" in TARGET_RULES
    (ex,) = _examples("qa/squad", [EXACT[-1][1]])
    assert train_target(spec, ex) == "the northern hills"
    assert gold_texts(spec, ex) == ["the northern hills", "northern hills"]


def test_squad_v2_unanswerable_targets_empty():
    spec = get_task("qa/squad_v2")
    record = {"id": "q2", "title": "T", "question": "Who?", "context": "Nobody.", "answers": {"text": [], "answer_start": []}}
    (ex,) = _examples("qa/squad_v2", [record])
    assert render_input(spec, ex) == "question: Who? context: Nobody."
    assert train_target(spec, ex) == "" and gold_texts(spec, ex) == []


def test_verbalized_gold_text_is_the_label_word():
    spec = get_task("superglue/cb")
    (ex,) = _examples("superglue/cb", [EXACT[0][1]])
    assert gold_texts(spec, ex) == ["neutral"]


# ---------------------------------------------------------------- overrides and one-line errors


def test_with_overrides_changes_the_template():
    spec = get_task("superglue/cb")
    (ex,) = _examples("superglue/cb", [EXACT[0][1]])
    new = with_overrides(spec, template="{text_a} Question: {text_b}? Answer:", verbalizer=["yes", "no", "maybe"])
    assert render_input(new, ex) == "He said the door was open. Question: the door was open? Answer:"
    assert train_target(new, ex) == "maybe" and new.verbalizer == ("yes", "no", "maybe")
    assert new.template_source.startswith("overridden") and spec.template_source in new.template_source
    assert render_input(spec, ex).startswith("cb hypothesis:")  # the declaration is untouched
    assert with_overrides(spec) is spec


def test_unknown_placeholder_is_one_line():
    spec = with_overrides(get_task("superglue/cb"), template="cb {foo} premise: {text_a}")  # accepted: checked at render
    (ex,) = _examples("superglue/cb", [EXACT[0][1]])
    with pytest.raises(ConfigError) as excinfo:
        render_input(spec, ex)
    assert _one_line_config_error(excinfo) == (
        "task superglue/cb: template field 'foo' is not in its examples (fields: text_a, text_b, label); fix the template"
    )


def test_unreadable_index_is_one_line():
    spec = with_overrides(get_task("superglue/copa"), template="{choices[2]}")
    (ex,) = _examples("superglue/copa", [EXACT[3][1]])
    with pytest.raises(ConfigError) as excinfo:
        render_input(spec, ex)
    assert _one_line_config_error(excinfo).startswith("task superglue/copa: template field cannot be read")


@pytest.mark.parametrize("template", ["cb {text_a", "cb {text_a.upper}", "cb {} {text_a}", "{text_a:{width}}"])
def test_malformed_template_refused_when_declared(template: str):
    with pytest.raises(ConfigError) as excinfo:
        with_overrides(get_task("superglue/cb"), template=template)
    assert _one_line_config_error(excinfo).startswith("task superglue/cb: template")


def test_wrong_length_verbalizer_is_one_line():
    with pytest.raises(ConfigError) as excinfo:
        with_overrides(get_task("superglue/cb"), verbalizer=("yes", "no"))
    message = _one_line_config_error(excinfo)
    assert message.startswith("task superglue/cb: ")
    assert "for 3 labels (entailment, contradiction, neutral)" in message


def test_wrong_length_choice_words_refused_at_render():
    spec = with_overrides(get_task("superglue/copa"), verbalizer=("A", "B", "C"))  # no label set: checked per example
    (ex,) = _examples("superglue/copa", [EXACT[3][1]])
    with pytest.raises(ConfigError) as excinfo:
        train_target(spec, ex)
    assert _one_line_config_error(excinfo).startswith("task superglue/copa: verbalizer has 3 words (A, B, C) for 2 choices")


def test_declaration_checks():
    cb = get_task("superglue/cb")
    local = cb.local
    with pytest.raises(ConfigError, match="needs a label set"):
        TaskSpec("x/reg", "regression", local, None, metrics=("pearson",), primary="pearson", verbalizer=("low", "high"))
    with pytest.raises(ConfigError, match="must differ"):
        with_overrides(cb, verbalizer=("yes", "no", "yes"))
    with pytest.raises(ConfigError, match="neither a rule"):
        TaskSpec("x/gen", "extractive_qa", local, None, metrics=("squad_f1",), primary="squad_f1", target="answer")
    with pytest.raises(ConfigError, match="verbalizer must be a list"):
        with_overrides(cb, verbalizer="yes")
    with pytest.raises(ConfigError) as excinfo:
        render_input(get_task("glue/stsb"), {"text_a": "a", "text_b": "b", "label": 1.0})
    assert _one_line_config_error(excinfo).startswith("task glue/stsb declares no text-to-text template")
    with pytest.raises(ConfigError, match="declares no verbalizer"):
        label_targets(get_task("superglue/record"))


def test_unlabelled_example_has_no_target():
    spec = get_task("superglue/cb")
    with pytest.raises(DataError, match="has no label"):
        train_target(spec, {"id": 7, "text_a": "a", "text_b": "b", "label": None})


def test_bare_template_renders():
    assert render_input("{text_a} / {choices[1]}", {"text_a": "x", "choices": ["p", "q"]}) == "x / q"
