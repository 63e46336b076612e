"""Per-example predictions of a run's reported splits, one JSON line per scored example, as
lm-evaluation-harness's ``--log_samples`` keeps them: ``<output>/predictions/<split>.jsonl``
(multi-task runs: ``predictions/<task>/<split>.jsonl``, the task's '/' written '-').

A line is ``{"id", "prediction", "gold"}``, plus ``"group"`` where the task scores groups
(MultiRC: the question) and ``"cluster"`` where the task declares passages (the item's
passage as a string: MultiRC's paragraph idx, ReCoRD's article idx, BoolQ's passage as a
digest of its text; see ``TaskSpec.passage``). ``id`` is the data's own id (SuperGLUE ``idx``, SQuAD ``id``, GLUE's
``index``), else the record's 0-based position in its file (see
:func:`ptcore.tasks.io.to_examples`). ``prediction`` and ``gold`` are in the task's label
space: the label names where the task declares them (CB ``"entailment"``, BoolQ ``true``), a
float for regression, the chosen choice's index for multiple choice (ReCoRD: the chosen
entity string vs the gold answer strings), IOB2 tag lists for NER, the answer string ("" = no
answer) vs the gold answer strings for extractive QA.

The lines are the items the split's metrics were computed from (``Scores.inputs``), in
example order, so the metrics recomputed from a file are the result's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .fileio import atomic_write
from .tasks.base import TaskSpec

PREDICTIONS_DIR = "predictions"


def label_value(value: Any, spec: TaskSpec) -> Any:
    """A prediction or gold label as the task names it: a classification label index becomes
    ``spec.labels[index]``; anything else stays as it is."""
    if spec.kind == "classification" and spec.labels and isinstance(value, int):
        return spec.labels[value]
    return value


def prediction_rows(scores, examples: list[dict], spec: TaskSpec) -> list[dict[str, Any]]:
    """One line per item of ``scores.inputs`` (a :class:`ptcore.train.Scores`), in example order."""
    inputs = scores.inputs
    groups = inputs.groups if inputs.groups is not None else [None] * len(inputs)
    clusters = inputs.clusters if inputs.clusters is not None else [None] * len(inputs)
    items = zip(scores.item_examples, inputs.predictions, inputs.references, groups, clusters, strict=True)
    rows = []
    for index, pred, gold, group, cluster in sorted(items, key=lambda item: item[0]):
        row = {"id": examples[index].get("id", index), "prediction": label_value(pred, spec), "gold": label_value(gold, spec)}
        if group is not None:
            row["group"] = group
        if cluster is not None:
            row["cluster"] = cluster
        rows.append(row)
    return rows


def write_predictions(root: Path, reported: dict, examples: dict[str, list[dict]], spec: TaskSpec,
                      under: str = PREDICTIONS_DIR) -> dict[str, str]:
    """Write ``root/<under>/<split>.jsonl`` (atomically) for each split of ``reported``
    (split -> Scores) that carries its metric inputs; return split -> that path relative to
    ``root``, for the result record."""
    written = {}
    for split, scores in reported.items():
        if getattr(scores, "inputs", None) is None:
            continue
        rel = f"{under}/{split}.jsonl"
        with atomic_write(Path(root) / rel, "w", encoding="utf-8") as f:
            for row in prediction_rows(scores, examples[split], spec):
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        written[split] = rel
    return written
