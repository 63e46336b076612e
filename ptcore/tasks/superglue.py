"""SuperGLUE tasks (Wang et al., 2019).

Local layout: ``<data_dir>/superglue/<Task>/{train,val}.jsonl``, the official SuperGLUE v2
jsonl release (https://dl.fbaipublicfiles.com/glue/superglue/data/v2/<Task>.zip). The hub
copy is ``aps/super_glue`` (a parquet mirror of ``super_glue``), whose MultiRC, ReCoRD and
WSC records are *flattened* differently from the official files; the hooks below accept
both shapes.

The diagnostic sets (AX-b, AX-g) are test-only and not declared.

Carving (see :mod:`ptcore.tasks.io`): tasks with several examples per passage carve whole
passages (``carve_by="text_a"``), so no passage is in both the carved split and the split
it came from: BoolQ (questions about one Wikipedia passage; offline it is carved 60/10/30
from its validation file), MultiRC (all answer options of all questions about one
paragraph) and ReCoRD (all queries about one news article). The same tasks declare their
``passage`` (BoolQ: the passage text; MultiRC, ReCoRD: the ``passage`` id their hooks set),
so a ``train_size`` sample and its few-shot dev keep whole passages too (:mod:`ptcore.sampling`)
and predictions name each item's passage (``cluster``).

Text-to-text formats (``template`` / ``verbalizer``, :mod:`ptcore.tasks.templates`) follow
T5's ``preprocessors.glue`` (google-research/text-to-text-transfer-transformer,
``t5/data/preprocessors.py``; feature order from ``t5/data/glue_utils.py``): the task name,
then ``key: value`` for each input feature in sorted order (MultiRC, WiC: a fixed order),
with the tfds label names as targets. Where our examples merge fields (COPA, WiC, MultiRC)
the template comes as close as the example allows and ``template_source`` says how it
differs. ReCoRD has none: its targets are per-example entities, not label words.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ..errors import DataError
from ..metrics import squad_exact
from .base import HubSource, LocalSource, TaskSpec
from .io import label_index

HUB = "aps/super_glue"
NLI3 = ("entailment", "contradiction", "neutral")  # CB, in the hub's ClassLabel order
NLI2 = ("entailment", "not_entailment")
BOOL = (False, True)  # jsonl stores JSON booleans; the hub stores 0/1 (== False/True)
BOOL_WORDS = ("False", "True")  # T5's targets of the tfds False/True label classes
T5_GLUE = "T5 preprocessors.glue (t5/data/preprocessors.py): sorted feature keys, tfds label names"


def _local(task_dir: str) -> LocalSource:
    return LocalSource(path=f"superglue/{task_dir}", format="jsonl", files={"train": "train.jsonl", "val": "val.jsonl"})


def _label(rec: dict, spec: TaskSpec, key: str = "label") -> Optional[int]:
    """Index of ``rec[key]`` in ``spec.labels``; None for an unlabelled (test) record."""
    raw = rec.get(key)
    if raw is None or raw == -1:
        return None
    return label_index(raw, spec)


def _field(rec: dict, spec: TaskSpec, key: str) -> Any:
    try:
        return rec[key]
    except KeyError:
        raise DataError(
            f"task {spec.name}: record has no field {key!r} (fields: {sorted(rec)}); is this the official format?"
        ) from None


# ---------------------------------------------------------------- COPA

COPA_CONNECTIVES = {"cause": "What was the cause?", "effect": "What happened as a result?"}


def copa_example(rec: dict, spec: TaskSpec) -> dict:
    """Premise plus a question about its cause / effect; the two alternatives are the choices."""
    question = _field(rec, spec, "question")
    if question not in COPA_CONNECTIVES:
        raise DataError(f"task {spec.name}: COPA question must be 'cause' or 'effect', got {question!r}")
    choices = [str(_field(rec, spec, "choice1")), str(_field(rec, spec, "choice2"))]
    label = rec.get("label")
    return {
        "text_a": f"{_field(rec, spec, 'premise')} {COPA_CONNECTIVES[question]}",
        "choices": choices,
        "label": _choice_index(label, len(choices), spec),
    }


def _choice_index(value: Any, n: int, spec: TaskSpec) -> Optional[int]:
    if value is None or value == -1:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        raise DataError(f"task {spec.name}: label {value!r} is not a choice index in [0, {n})")
    return value


# ---------------------------------------------------------------- WiC


def wic_example(rec: dict, spec: TaskSpec) -> dict:
    """The target word leads the first sentence ("bank: He sat on the bank."), as in P-tuning v2."""
    word = _field(rec, spec, "word")
    return {
        "text_a": f"{word}: {_field(rec, spec, 'sentence1')}",
        "text_b": str(_field(rec, spec, "sentence2")),
        "label": _label(rec, spec),
    }


# ---------------------------------------------------------------- WSC

WSC_NOUN_MARK = ("*", "*")  # span1: the candidate referent
WSC_PRONOUN_MARK = ("#", "#")  # span2: the pronoun
_TRAILING_PUNCT = re.compile(r"^(.*?)([.,;:!?'\")]*)$")


def _close_mark(word: str, span_last: str, close: str) -> str:
    """Put ``close`` after the span's part of ``word``: "himself," -> "himself#,", "Mark's" -> "Mark*'s"."""
    if word.lower().startswith(span_last.lower()) and span_last:
        return word[: len(span_last)] + close + word[len(span_last) :]
    core, punct = _TRAILING_PUNCT.match(word).groups()  # type: ignore[union-attr]
    return f"{core}{close}{punct}" if core else word + close


def _mark(words: list[str], start: int, span_text: str, mark: tuple[str, str], spec: TaskSpec) -> None:
    """Wrap the ``len(span_text.split())`` words from ``start`` in ``mark``, in place.

    Indices are whitespace-word positions (the official convention). Marking by position
    rather than by substring search survives the known WSC quirks where the span text
    is not a verbatim substring of the text (case, a trailing period, a newline).
    """
    span_words = str(span_text).split() or [""]
    end = start + len(span_words) - 1
    if not 0 <= start <= end < len(words):
        raise DataError(
            f"task {spec.name}: span {span_text!r} at word {start} is outside the text ({len(words)} words)"
        )
    words[end] = _close_mark(words[end], span_words[-1].rstrip(".,;:!?"), mark[1])
    words[start] = mark[0] + words[start]


def wsc_example(rec: dict, spec: TaskSpec) -> dict:
    """Mark the noun *like this* and the pronoun #like this#; label: does the pronoun refer to the noun?"""
    # official jsonl nests the spans under "target"; the hub flattens them into the record
    target = rec["target"] if "target" in rec else rec
    words = str(_field(rec, spec, "text")).split()
    for k, mark in ((1, WSC_NOUN_MARK), (2, WSC_PRONOUN_MARK)):
        _mark(words, int(_field(target, spec, f"span{k}_index")), _field(target, spec, f"span{k}_text"), mark, spec)
    return {"text_a": " ".join(words), "label": _label(rec, spec)}


# ---------------------------------------------------------------- MultiRC

# The original MultiRC release wraps sentences in "<b>Sent 1: </b>...<br>"; SuperGLUE's
# copy is mostly plain text, but strip the markup if a copy carries it.
_MULTIRC_MARKUP = re.compile(r"<b>Sent \d+: </b>|<br>")


def _multirc_text(text: str) -> str:
    return re.sub(r"\s+", " ", _MULTIRC_MARKUP.sub(" ", text)).strip()


def _multirc_option(paragraph: str, question: str, answer: str, label: Any, group: str, pid: str, spec: TaskSpec) -> dict:
    return {
        "text_a": _multirc_text(paragraph),
        "text_b": f"{question} {answer}",
        "label": None if label is None or label == -1 else label_index(int(label), spec),
        "group": group,
        "passage": pid,
    }


def multirc_examples(rec: dict, spec: TaskSpec) -> list[dict]:
    """One binary example per answer option; ``group`` = "<paragraph idx>-<question idx>" for EM,
    ``passage`` = "<paragraph idx>" (the unit of sampling and of a report's bootstrap)."""
    if "paragraph" in rec:  # hub: already one record per answer option
        idx = rec["idx"]
        group = f"{idx['paragraph']}-{idx['question']}"
        return [_multirc_option(rec["paragraph"], rec["question"], rec["answer"], rec.get("label"), group,
                                str(idx["paragraph"]), spec)]
    passage = _field(rec, spec, "passage")
    out = []
    for q in passage["questions"]:
        group = f"{rec['idx']}-{q['idx']}"
        for k, a in enumerate(q["answers"]):
            option = _multirc_option(passage["text"], q["question"], a["text"], a.get("label"), group, str(rec["idx"]), spec)
            option["id"] = f"{group}-{a.get('idx', k)}"  # as the hub's {paragraph, question, answer} ids read
            out.append(option)
    return out


# ---------------------------------------------------------------- ReCoRD

PLACEHOLDER = "@placeholder"


def _record_passage(text: str) -> str:
    """CNN/DailyMail highlights are separated by "\\n@highlight\\n"; turn them into sentences."""
    text = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text)
    return text.replace("\n@highlight\n", ". ").strip()


def record_gold(entities: list[str], answers: list[str]) -> list[int]:
    """Indices of the candidates that match a gold answer: official EM 1 (SQuAD
    normalisation) against at least one gold answer string, so every gold surface form
    ("Obama", "Barack Obama") that is a candidate counts, and nothing the metric would
    score as a miss does."""
    return [i for i, e in enumerate(entities) if any(squad_exact(e, a) for a in answers)]


def _record_query(passage: str, query: str, entities: list[str], answers: list[str], spec: TaskSpec,
                  pid: Optional[str] = None) -> dict:
    """Every query becomes an example, labelled or not, matched or not (see :func:`record_examples`).
    ``pid``: the passage's id (its text where the record has none)."""
    if PLACEHOLDER not in query:
        raise DataError(f"task {spec.name}: ReCoRD query has no {PLACEHOLDER!r}: {query[:80]!r}")
    if not entities:
        raise DataError(f"task {spec.name}: ReCoRD passage has no candidate entities (query {query[:80]!r})")
    gold = record_gold(entities, answers)
    return {
        "text_a": _record_passage(passage),
        "choices": [query.replace(PLACEHOLDER, e) for e in entities],
        "entities": list(entities),
        "answers": list(answers),  # [] = unlabelled (test)
        "gold": gold,
        "label": gold[0] if gold else None,  # None: unlabelled, or no candidate matches a gold answer
        "passage": pid if pid is not None else _record_passage(passage),
    }


def record_examples(rec: dict, spec: TaskSpec) -> list[dict]:
    """One multiple-choice example per query; choices = the query with each entity filled in.

    ``entities`` are the passage's unique candidate strings (sorted), ``answers`` the
    query's unique gold strings (sorted), ``gold`` every candidate matching one of them
    (:func:`record_gold`). Every query is kept here: in dev / val a query whose gold
    answers match no candidate is scored as a miss (the model still picks a candidate,
    whose EM / F1 against the golds is computed as usual); only the train split drops
    such queries (:func:`record_train`).
    """
    if "query" in rec:  # hub: one record per query, entities/answers already unique strings
        idx = rec.get("idx")
        pid = str(idx["passage"]) if isinstance(idx, dict) and "passage" in idx else None
        return [_record_query(rec["passage"], rec["query"], list(rec["entities"]), list(rec["answers"]), spec, pid)]
    passage = _field(rec, spec, "passage")
    text = passage["text"]
    # official spans are inclusive of "end"; unique strings, sorted (as the hub builds them)
    entities = sorted({text[e["start"] : e["end"] + 1] for e in passage["entities"]})
    pid = str(rec["idx"]) if rec.get("idx") is not None else None  # one record per passage (article)
    out = []
    for qa in rec["qas"]:
        answers = sorted({a["text"] for a in qa.get("answers", [])})
        query = _record_query(text, qa["query"], entities, answers, spec, pid)
        if "idx" in rec and "idx" in qa:  # as the hub's {passage, query} ids read (else to_examples numbers them)
            query["id"] = f"{rec['idx']}-{qa['idx']}"
        out.append(query)
    return out


def record_train(train: list[dict], spec: TaskSpec) -> tuple[list[dict], list[str]]:
    """The train split without queries that have no gold candidate (nothing to train
    toward), and a data note saying how many were dropped. Dev / val keep them."""
    kept = [ex for ex in train if ex["gold"]]
    dropped = len(train) - len(kept)
    if not dropped:
        return train, []
    note = (
        f"train: dropped {dropped} of {len(train)} ReCoRD queries whose gold answers match no candidate entity "
        f"(dev/val keep such queries and score them as misses)"
    )
    return kept, [note]


# ---------------------------------------------------------------- declarations

SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="superglue/boolq",
        kind="classification",
        local=_local("BoolQ"),
        hub=HubSource(HUB, "boolq"),
        text_fields=("passage", "question"),
        labels=BOOL,
        description=(
            "BoolQ: yes/no question about a Wikipedia passage (accuracy); carved splits keep each passage's "
            "questions together."
        ),
        passage="text_a",  # no passage id in the data: the passage text is one
        options={"carve_by": "text_a", "carve_unit": "passage"},
        template="boolq passage: {text_a} question: {text_b}",
        verbalizer=BOOL_WORDS,
        template_source=T5_GLUE,
    ),
    TaskSpec(
        name="superglue/cb",
        kind="classification",
        local=_local("CB"),
        hub=HubSource(HUB, "cb"),
        text_fields=("premise", "hypothesis"),
        labels=NLI3,
        metrics=("accuracy", "macro_f1"),
        primary="accuracy",
        description="CommitmentBank: 3-way entailment of an embedded clause (accuracy, macro F1).",
        template="cb hypothesis: {text_b} premise: {text_a}",
        verbalizer=NLI3,
        template_source=T5_GLUE,
    ),
    TaskSpec(
        name="superglue/copa",
        kind="multiple_choice",
        local=_local("COPA"),
        hub=HubSource(HUB, "copa"),
        label_field=None,
        hook=copa_example,
        description="COPA: pick the more plausible cause/effect of a premise out of two (accuracy).",
        # both choices in the input, the target names the right one (as T5)
        template="copa choice1: {choices[0]} choice2: {choices[1]} premise: {text_a}",
        verbalizer=("choice1", "choice2"),
        template_source=(
            f"{T5_GLUE}; T5 ends with 'question: cause|effect', ours has no question key: our premise "
            f"already ends in the question phrase ('What was the cause?' / 'What happened as a result?')"
        ),
    ),
    TaskSpec(
        name="superglue/rte",
        kind="classification",
        local=_local("RTE"),
        hub=HubSource(HUB, "rte"),
        text_fields=("premise", "hypothesis"),
        labels=NLI2,
        description="RTE: 2-way textual entailment (accuracy).",
        template="rte hypothesis: {text_b} premise: {text_a}",
        verbalizer=NLI2,
        template_source=T5_GLUE,
    ),
    TaskSpec(
        name="superglue/wic",
        kind="classification",
        local=_local("WiC"),
        hub=HubSource(HUB, "wic"),
        labels=BOOL,
        hook=wic_example,
        description="WiC: is the target word used with the same sense in both sentences (accuracy).",
        template="wic sentence1: {text_a} sentence2: {text_b}",
        verbalizer=BOOL_WORDS,
        template_source=(
            f"{T5_GLUE}, order sentence1, sentence2, word (t5/data/glue_utils.py); our text_a leads sentence1 "
            f"with 'word: ' (wic_example), so the word opens sentence1 instead of a trailing 'word:' key"
        ),
    ),
    TaskSpec(
        name="superglue/wsc",
        kind="classification",
        local=_local("WSC"),
        hub=HubSource(HUB, "wsc.fixed"),
        labels=BOOL,
        hook=wsc_example,
        description="WSC: does the #pronoun# refer to the *noun* (marked in the text) (accuracy).",
        template="wsc text: {text_a}",
        verbalizer=BOOL_WORDS,
        template_source=(
            "T5 preprocessors.wsc ('wsc text: ...', False/True); T5 marks ' * noun * ' and ' # pronoun # ' with "
            "spaces, ours *noun* and #pronoun# (wsc_example); T5's own SuperGLUE mixture trains wsc_simple instead"
        ),
    ),
    TaskSpec(
        name="superglue/multirc",
        kind="classification",
        local=_local("MultiRC"),
        hub=HubSource(HUB, "multirc"),
        labels=(0, 1),
        hook=multirc_examples,
        metrics=("f1a", "em"),
        primary="f1a",
        max_length=512,
        description=(
            "MultiRC: is each answer option to a question about a paragraph correct (F1a, question EM); dev is "
            "carved by paragraph."
        ),
        passage="passage",  # the paragraph idx (multirc_examples)
        options={"carve_by": "text_a", "carve_unit": "paragraph"},
        template="multirc question: {text_b} paragraph: {text_a}",
        verbalizer=BOOL_WORDS,
        template_source=(
            f"{T5_GLUE}, order question, answer, paragraph (t5/data/glue_utils.py); our text_b is the question and "
            f"the answer joined by a space (multirc_examples), so there is no separate 'answer:' key"
        ),
    ),
    TaskSpec(
        name="superglue/record",
        kind="multiple_choice",
        local=_local("ReCoRD"),
        hub=HubSource(HUB, "record"),
        label_field=None,
        hook=record_examples,
        train_hook=record_train,
        metrics=("record_f1", "record_em"),
        primary="record_f1",
        max_length=512,
        description=(
            "ReCoRD: fill the query's @placeholder with a passage entity, chosen among the candidates; official "
            "token F1 / EM of the chosen entity, max over gold answers, over every query (no gold candidate = a "
            "miss); trained toward all gold candidates (set loss); dev carved by passage."
        ),
        passage="passage",  # the article's idx (record_examples)
        options={"carve_by": "text_a", "carve_unit": "passage", "score_text": True},
    ),
)
