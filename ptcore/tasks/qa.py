"""Extractive question answering (SQuAD), kind ``extractive_qa``.

Local layout: ``<data_dir>/squad/v1.1/{train-v1.1.json, dev-v1.1.json}`` and
``<data_dir>/squad/v2.0/{train-v2.0.json, dev-v2.0.json}``, the official files. The
official dev file is our reported ``val`` split; ``dev`` (selection) is 10% of the train
file's *articles*. Without the train file (the offline data directory has only SQuAD v1.1
dev) train/dev/val are carved from the dev file **by article** (``title``): 70/10/20 of
the 48 articles, fixed seed, so no article's paragraphs are both trained on and reported;
the result's ``data_notes`` say so, and ``val`` is then a 20% subset of the official dev.

Contexts longer than the token limit become several overlapping windows (``doc_stride``
tokens of overlap); answers are the best span over all windows of a question (n-best
``n_best`` starts x ends, at most ``max_answer_length`` tokens). SQuAD 2.0 predicts "no
answer" when the [CLS] null score beats the best span. Scores follow the official
evaluation script (``squad_em`` / ``squad_f1``, as fractions).

Text-to-text (:mod:`ptcore.tasks.templates`): the input is T5's ``preprocessors.squad``
``"question: <q> context: <c>"`` and the target rule ``"answers"`` trains toward the
first gold answer and scores a generated answer against all of them. T5 also pads
punctuation with spaces in question, context and answers; we keep the text as it is.
SQuAD 2.0 (no T5 task) trains its unanswerable questions toward ``""``, the no-answer
prediction of the official script.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import DataError
from .base import HubSource, LocalSource, TaskSpec

QA_OPTIONS = {
    "doc_stride": 128,
    "max_answer_length": 30,
    "n_best": 20,
    "max_query_length": 64,
    # carving (io.load_splits): whole articles go to one split
    "carve_by": "title",
    "carve_fractions": (0.7, 0.1, 0.2),
}


def qa_example(rec: dict, spec: TaskSpec) -> Optional[dict]:
    """A SQuAD record (local reader or hub: same field names) -> example.

    ``doc_stride`` and ``max_query_length`` are copied from the spec into the example: the
    kind's ``encode`` sees no spec, and the feature cache key then changes with them.
    """
    try:
        answers = rec["answers"]
        ex = {
            "id": str(rec["id"]),
            "title": str(rec.get("title", "")),
            "question": str(rec["question"]),
            "context": str(rec["context"]),
            "answers": {"text": [str(t) for t in answers["text"]], "answer_start": [int(s) for s in answers["answer_start"]]},
        }
    except (KeyError, TypeError) as e:
        raise DataError(f"task {spec.name}: record is not a SQuAD question ({type(e).__name__}: {e}); fields: {sorted(rec)}") from None
    if len(ex["answers"]["text"]) != len(ex["answers"]["answer_start"]):
        raise DataError(f"task {spec.name}: question {ex['id']}: answers.text and answers.answer_start differ in length")
    if not ex["answers"]["text"] and not spec.options.get("version_2_with_negative"):
        raise DataError(f"task {spec.name}: question {ex['id']} has no answer, which SQuAD v1.1 does not allow")
    ex["is_impossible"] = not ex["answers"]["text"]
    ex["doc_stride"] = int(spec.options["doc_stride"])
    ex["max_query_length"] = int(spec.options["max_query_length"])
    return ex


def _squad(name: str, version: str, hub: str, description: str, **options: Any) -> TaskSpec:
    return TaskSpec(
        name=f"qa/{name}",
        kind="extractive_qa",
        local=LocalSource(
            path=f"squad/v{version}",
            format="squad",
            files={"train": f"train-v{version}.json", "val": f"dev-v{version}.json"},
        ),
        hub=HubSource(hub, splits={"train": "train", "val": "validation"}),
        label_field=None,
        metrics=("squad_f1", "squad_em"),
        primary="squad_f1",
        hook=qa_example,
        max_length=384,
        description=description,
        options={**QA_OPTIONS, **options},
        template="question: {question} context: {context}",
        target="answers",
        template_source=(
            "T5 preprocessors.squad (t5/data/preprocessors.py), without its punctuation padding"
            + ("; unanswerable questions target ''" if version == "2.0" else "")
        ),
    )


SPECS: tuple[TaskSpec, ...] = (
    _squad(
        "squad", "1.1", "rajpurkar/squad",
        "SQuAD v1.1 extractive QA over Wikipedia paragraphs (F1/EM, official normalization); without the "
        "train file, train/dev/val are carved 70/10/20 by article (title) from the official dev file, fixed seed.",
        version_2_with_negative=False,
    ),
    _squad(
        "squad_v2", "2.0", "rajpurkar/squad_v2",
        "SQuAD v2.0: v1.1 plus unanswerable questions, null answer when the [CLS] score wins (F1/EM); "
        "without the train file, carved 70/10/20 by article (title) from the official dev file, fixed seed.",
        version_2_with_negative=True,
    ),
)
