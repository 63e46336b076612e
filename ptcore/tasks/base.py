"""Task declarations.

A task is *declared*, not coded: a :class:`TaskSpec` names its data source (local file
layout and format, plus the hub dataset for users with internet), its splits, the fields
that become model inputs, its label set and its metrics. Python hooks exist only where a
format needs them (COPA's choices, MultiRC's nested answers, WSC's span markup...).

Every split a task yields is a list of plain dict *examples* whose keys depend on the
task kind (see :mod:`ptcore.tasks.kinds`):

- ``classification`` / ``regression``: ``text_a``, optional ``text_b``, ``label``
  (int index into ``labels`` / float), optional ``group`` (MultiRC question id) and
  ``passage`` (MultiRC paragraph id; see ``TaskSpec.passage``).
- ``multiple_choice``: ``text_a``, ``choices`` (list of str), ``label`` (int); ReCoRD adds
  ``entities`` (the candidate string of each choice), ``answers`` (gold answer strings),
  ``gold`` (indices of every choice matching a gold answer; ``label`` is the first,
  None when none matches) and ``passage`` (the article's id).
- ``token_classification``: ``tokens`` (list of str), ``tags`` (list of str).
- ``extractive_qa``: ``id``, ``question``, ``context``, ``answers`` (``{"text": [...],
  "answer_start": [...]}``).

A spec may also declare a *text-to-text* format (``template``, ``verbalizer`` or
``target``, ``template_source``), so a T5 or decoder LM can be trained on the task by
verbalizer (rank classification) or by generation; :mod:`ptcore.tasks.templates` renders
examples with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .kinds import kind_registry
from .templates import check_text_to_text

# Split names used everywhere in ptcore:
#   train -> what the optimizer sees
#   dev   -> model selection (best epoch, early stopping, hyper-parameter search);
#            carved from the official training data with a fixed seed
#   val   -> the official validation split: reported, never selected on
#   test  -> an official labelled test split where one exists (WNUT-17, CoNLL-2003)
SPLITS = ("train", "dev", "val", "test")


@dataclass(frozen=True)
class LocalSource:
    """Where a task lives inside the data directory and how its files are read.

    ``files`` maps the *file role* (``train``, ``val``, ``dev``, ``test``) to a file name
    under ``<data_dir>/<path>``. The role ``val`` is the official validation file (GLUE
    calls it dev.tsv; it is still our reported ``val`` split).
    """

    path: str  # e.g. "superglue/CB"
    format: str  # jsonl | tsv | conll | squad
    files: dict[str, str]
    # tsv only: True if the first row is a header; columns are then named, else indexed
    header: bool = True
    # conll only: which column holds the tag (default: last)
    tag_column: int = -1


@dataclass(frozen=True)
class HubSource:
    """The same task on the Hugging Face hub (used only when the data directory lacks it)."""

    path: str  # e.g. "super_glue"
    name: Optional[str] = None  # e.g. "cb"
    # our split role -> hub split name
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "validation"})


@dataclass(frozen=True)
class TaskSpec:
    name: str  # "<benchmark>/<task>", lower case
    kind: str  # a registered task kind (ptcore.tasks.kinds: kind_class(kind) answers its facts)
    local: LocalSource
    hub: Optional[HubSource]
    # record field(s) that become text_a / text_b (classification, regression)
    text_fields: tuple[str, ...] = ()
    label_field: Optional[str] = "label"
    # label *values* as they appear in the raw records, in index order
    labels: tuple[Any, ...] = ()
    metrics: tuple[str, ...] = ("accuracy",)
    primary: str = "accuracy"
    # hook(record, spec) -> example dict or None (skip) / list of examples; overrides the
    # generic field mapping where a format needs code
    hook: Optional[Callable[[dict, "TaskSpec"], Any]] = None
    # train_hook(train examples, spec) -> (train examples, data notes): edits the train split
    # only, after carving (ReCoRD drops queries whose gold answers match no candidate)
    train_hook: Optional[Callable[[list[dict], "TaskSpec"], tuple[list[dict], list[str]]]] = None
    max_length: int = 256
    # fraction of the official train split held out as the selection ("dev") split
    dev_fraction: float = 0.1
    description: str = ""
    # the example key whose equal values are one passage (BoolQ's passage text, MultiRC's
    # paragraph id, ReCoRD's article id), None where examples do not share passages: a
    # train_size sample and its few-shot dev keep whole passages on one side
    # (ptcore.sampling), and predictions carry each item's passage as its ``cluster`` (the
    # unit a report's bootstrap resamples)
    passage: Optional[str] = None
    # a note on the official files, added to the data notes of every run that reads the
    # task's train file (SST-2: phrases in train, whole sentences in val)
    data_note: str = ""
    # text-to-text format (ptcore.tasks.templates renders it; None / () = not declared, and a
    # text-to-text consumer refuses the task). template: the model input, a str.format
    # template over the example dict ("cb hypothesis: {text_b} premise: {text_a}";
    # placeholders are example keys, optionally indexed: {choices[0]}), checked against the
    # examples when one is rendered
    template: Optional[str] = None
    # classification: the target text of each label, in label index order (one per label);
    # multiple choice: the target of choice i (COPA: "choice1", "choice2")
    verbalizer: tuple[str, ...] = ()
    # generation: the training target, a rule of templates.TARGET_RULES ("answers": the first
    # gold answer for training, every gold answer for scoring) or a template like `template`
    target: Optional[str] = None
    # where the template and label words come from, a short citation
    template_source: str = ""
    # free-form extra options for hooks and kinds (e.g. NER tag scheme, QA doc stride);
    # io.load_splits reads carve_by / carve_unit / carve_fractions, and the multiple-choice
    # kind reads score_text (score the chosen entity string against gold answer strings)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = kind_registry()
        if self.kind not in kinds:
            raise ValueError(f"task {self.name}: {kinds.unknown_message(self.kind)}")
        if self.primary not in self.metrics:
            raise ValueError(f"task {self.name}: primary metric {self.primary!r} not in {self.metrics}")
        check_text_to_text(self)  # ConfigError: with_overrides builds specs from a study's values

    @property
    def num_labels(self) -> int:
        return len(self.labels)
