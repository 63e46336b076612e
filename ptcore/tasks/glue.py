"""GLUE tasks (Wang et al., 2018).

Local layout: ``<data_dir>/glue/<Task>/{train,dev}.tsv`` as written by GLUE's
``download_glue_data.py``. GLUE's ``dev.tsv`` is our ``val`` split (the reported one); our
``dev`` is carved from ``train.tsv``. MNLI's validation files are ``dev_matched.tsv`` and
``dev_mismatched.tsv``. The hub copy is ``nyu-mll/glue``, whose column names differ from
the tsv headers for some tasks; :func:`renaming_hook` maps them onto the tsv names, so
one declaration serves both sources.

Text-to-text formats (``template`` / ``verbalizer``, :mod:`ptcore.tasks.templates`) are
T5's ``preprocessors.glue`` (google-research/text-to-text-transfer-transformer,
``t5/data/preprocessors.py``): the task name, then ``key: value`` for each of the tfds
features in sorted order, with the tfds label names as targets, written in *our* label
order. STS-B (regression) has none.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .base import HubSource, LocalSource, TaskSpec
from .io import default_example

HUB = "nyu-mll/glue"
BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")
NLI3 = ("entailment", "neutral", "contradiction")  # the hub's ClassLabel order for MNLI
T5_GLUE = "T5 preprocessors.glue (t5/data/preprocessors.py): sorted tfds feature keys, tfds label names"


def renaming_hook(hub_to_local: dict[str, str]) -> Callable[[dict, TaskSpec], Optional[dict]]:
    """A hook reading hub records (hub column names) with the spec's tsv field names."""

    def hook(rec: dict, spec: TaskSpec) -> Optional[dict]:
        if any(name in rec for name in hub_to_local):  # a hub record; tsv records lack these names
            rec = {hub_to_local.get(k, k): v for k, v in rec.items()}
        return default_example(rec, spec)

    return hook


def _glue(
    task: str,
    task_dir: str,
    text_fields: tuple[str, ...],
    label_field: str,
    labels: tuple[Any, ...],
    description: str,
    *,
    kind: str = "classification",
    hub_to_local: Optional[dict[str, str]] = None,
    hub_name: Optional[str] = None,
    val_file: str = "dev.tsv",
    hub_val: str = "validation",
    header: bool = True,
    **spec_kwargs: Any,
) -> TaskSpec:
    return TaskSpec(
        name=f"glue/{task}",
        kind=kind,
        local=LocalSource(
            path=f"glue/{task_dir}", format="tsv", files={"train": "train.tsv", "val": val_file}, header=header
        ),
        hub=HubSource(HUB, hub_name or task, splits={"train": "train", "val": hub_val}),
        text_fields=text_fields,
        label_field=label_field,
        labels=labels,
        hook=renaming_hook(hub_to_local) if hub_to_local else None,
        description=description,
        **spec_kwargs,
    )


_MNLI_HUB = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}
MNLI_TEMPLATE = "mnli hypothesis: {text_b} premise: {text_a}"  # tfds keys premise, hypothesis; sorted

SPECS: tuple[TaskSpec, ...] = (
    # CoLA's tsv has no header: 0 source, 1 label, 2 original mark ("*" or empty), 3 sentence
    _glue(
        "cola", "CoLA", ("3",), "1", BINARY,
        "CoLA: is the sentence grammatically acceptable (Matthews corr.).",
        header=False, hub_to_local={"sentence": "3", "label": "1"},
        metrics=("mcc", "accuracy"), primary="mcc",
        template="cola sentence: {text_a}", verbalizer=("unacceptable", "acceptable"), template_source=T5_GLUE,
    ),
    _glue(
        "sst2", "SST-2", ("sentence",), "label", BINARY,
        "SST-2: binary sentiment of a movie-review phrase (accuracy).",
        # GLUE's train.tsv holds every phrase of the treebank's training trees, dev.tsv whole sentences
        data_note=("SST-2: train and the dev carved from it are phrases of the treebank (sub-sentence spans), "
                   "val is whole sentences: dev and val scores are not on the same kind of input"),
        template="sst2 sentence: {text_a}", verbalizer=("negative", "positive"), template_source=T5_GLUE,
    ),
    _glue(
        "mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", BINARY,
        "MRPC: are the two news sentences paraphrases (F1 of the positive class, accuracy).",
        hub_to_local={"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
        metrics=("f1", "accuracy"), primary="f1",
        template="mrpc sentence1: {text_a} sentence2: {text_b}", verbalizer=("not_equivalent", "equivalent"),
        template_source=T5_GLUE,
    ),
    _glue(
        "qqp", "QQP", ("question1", "question2"), "is_duplicate", BINARY,
        "QQP: are the two Quora questions duplicates (F1 of the positive class, accuracy).",
        hub_to_local={"label": "is_duplicate"},
        metrics=("f1", "accuracy"), primary="f1",
        template="qqp question1: {text_a} question2: {text_b}", verbalizer=("not_duplicate", "duplicate"),
        template_source=T5_GLUE,
    ),
    _glue(
        "stsb", "STS-B", ("sentence1", "sentence2"), "score", (),
        "STS-B: semantic similarity of two sentences on a 0-5 scale (Pearson, Spearman).",
        kind="regression", hub_to_local={"label": "score"},
        metrics=("pearson", "spearman"), primary="pearson",
    ),
    _glue(
        "mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", NLI3,
        "MNLI: 3-way entailment, matched-genre validation set (accuracy).",
        val_file="dev_matched.tsv", hub_val="validation_matched", hub_to_local=_MNLI_HUB,
        template=MNLI_TEMPLATE, verbalizer=NLI3, template_source=T5_GLUE,
    ),
    _glue(
        "mnli_mismatched", "MNLI", ("sentence1", "sentence2"), "gold_label", NLI3,
        "MNLI: 3-way entailment, mismatched-genre validation set (accuracy); same training data as glue/mnli.",
        hub_name="mnli", val_file="dev_mismatched.tsv", hub_val="validation_mismatched", hub_to_local=_MNLI_HUB,
        template=MNLI_TEMPLATE, verbalizer=NLI3, template_source=f"{T5_GLUE} (T5 casts every MNLI split as 'mnli')",
    ),
    _glue(
        "qnli", "QNLI", ("question", "sentence"), "label", NLI2,
        "QNLI: does the sentence answer the question (accuracy).",
        template="qnli question: {text_a} sentence: {text_b}", verbalizer=NLI2, template_source=T5_GLUE,
    ),
    _glue(
        "rte", "RTE", ("sentence1", "sentence2"), "label", NLI2,
        "RTE: 2-way textual entailment (accuracy).",
        template="rte sentence1: {text_a} sentence2: {text_b}", verbalizer=NLI2, template_source=T5_GLUE,
    ),
    _glue(
        "wnli", "WNLI", ("sentence1", "sentence2"), "label", BINARY,
        "WNLI: does the sentence with the pronoun substituted follow (accuracy).",
        # GLUE's WNLI label 1 is entailment (tfds: not_entailment, entailment)
        template="wnli sentence1: {text_a} sentence2: {text_b}", verbalizer=("not_entailment", "entailment"),
        template_source=f"{T5_GLUE}; T5's own GLUE mixture leaves WNLI out (it trains on WSC/DPR instead)",
    ),
)
