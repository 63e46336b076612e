"""Task kinds: how examples become tensors, which head reads the encoder, the loss, and
how predictions are scored. Shared by every method (methods only produce hidden states).

:class:`Kind` is the abstract base: its docstring is the lifecycle (which method ptcore
calls when), its abstract methods what every kind provides, and its facts (``name``,
``display_name``, ``has_label_set``, ``truncation``) what the rest of the tool asks a kind
instead of keeping lists of kind names. Kinds register themselves (:func:`register_kind`):
classification, regression and multiple choice here, token classification and extractive
QA in :mod:`ptcore.tasks.sequence_kinds`.

The classes load without torch (it is imported when a method first uses it, see
:mod:`ptcore.lazy`): task declarations, ``orchestrate ls`` and the report read the facts.
"""

from __future__ import annotations

import abc
import importlib
import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, Sequence

from .. import metrics as M
from ..lazy import LazyModule
from ..registry import Registry

if TYPE_CHECKING:
    from .base import TaskSpec  # annotations only: the task declarations import this module (a spec checks its kind)
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
else:  # imported on first use: the kinds' facts load without torch
    torch, nn, F = LazyModule("torch"), LazyModule("torch.nn"), LazyModule("torch.nn.functional")

# How a kind fits an input longer than the token limit:
#   "cut":     one sequence per example (per choice for multiple choice), cut at the limit;
#              the run counts the inputs that reach it (its data budget's ``truncated``)
#   "words":   cut at the limit; the words past it are predicted O and still scored (NER)
#   "windows": overlapping windows over the context; nothing is lost (extractive QA)
Truncation = Literal["cut", "words", "windows"]
TRUNCATIONS: tuple[str, ...] = Truncation.__args__

# padding value per feature key (sequences of ints); other int-list keys pad with 0
PAD_VALUES = {"labels": -100}


def pad(seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad int sequences to the longest. -> (B, Tmax)"""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate_sequences(features: list[dict], pad_id: int, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    batch = {}
    for key in keys:
        if key in features[0]:
            batch[key] = pad([f[key] for f in features], pad_id if key == "input_ids" else PAD_VALUES.get(key, 0))
    return batch


def with_segments(enc):
    """A tokenizer's batch output with ``token_type_ids`` (all 0 where the tokenizer has no
    segments, e.g. RoBERTa), so every kind's features have the same keys."""
    if "token_type_ids" not in enc:
        enc["token_type_ids"] = [[0] * len(ids) for ids in enc["input_ids"]]
    return enc


class Kind(abc.ABC):
    """What a task kind does with a task's examples, from text to scores.

    A run holds one instance per task (``get_kind(spec.kind)``); ptcore calls, in order:

    **Data**, once per split (``ptcore.data.encode_split``; later runs may read the
    features from the cache instead):

    1. :meth:`encode` ``(examples, tokenizer, max_length) -> features``: one or more
       feature dicts of plain python lists per example, each with ``example_index``; an
       input longer than ``max_length`` is fitted as :attr:`truncation` says.

    **Model**, once (``ptcore.model.build_model``; a multi-task run once per task):

    2. :meth:`make_head` ``(hidden, spec, dropout) -> nn.Module``: the task head on the
       method's hidden states (one per input token, prompts stripped).

    **Every batch**, training and evaluation:

    3. :meth:`collate` ``(features, pad_id) -> batch``: tensors padded to the longest
       feature of the batch (the DataLoader's ``collate_fn``, ``ptcore.data.make_loader``).
    4. :meth:`logits` ``(model, batch) -> Tensor``: runs ``model.encoder`` and
       ``model.head`` (what ``TaskModel.forward`` returns).
    5. Training: :meth:`loss` ``(logits, batch) -> Tensor``, a mean over
       :meth:`loss_units` ``(batch)`` (examples; NER: scored words), which weights
       micro-batches so that they add up to their whole batch's loss.
       Evaluation: :meth:`decode` ``(logits, batch) -> list``, one python prediction per
       feature.

    **Every evaluation**, over a split's decoded predictions (``ptcore.train.evaluate``):

    6. :meth:`metric_inputs` ``(preds, features, examples, spec) -> MetricInputs``: the
       per-item predictions, references and groups the task's metrics take (plain JSON: a
       run stores them, a report bootstraps over items).
    7. :meth:`item_examples` ``(features, examples) -> list[int]``: the example index of
       each of those items, in their order (what a predictions file keys its lines by).

    :meth:`score` is ``score_inputs(spec.metrics, metric_inputs(...))``.

    **Facts**, class attributes that need neither an instance nor torch
    (``kind_class(spec.kind).has_label_set``): :attr:`name`, :attr:`display_name`,
    :attr:`has_label_set`, :attr:`truncation`. A kind states each in its own class body
    (:func:`register_kind` checks), so one that refines another (regression from
    classification) never inherits a fact by accident.
    """

    name: ClassVar[str]  # the registry name task declarations use (TaskSpec.kind)
    display_name: ClassVar[str]  # how people read it ("multiple choice")
    # predictions are labels from a fixed set: a majority class and chance exist (the
    # report's references) and the run records its training label counts
    has_label_set: ClassVar[bool]
    truncation: ClassVar[Truncation]  # how an input longer than the limit is fitted (see TRUNCATIONS)
    FACTS: ClassVar[tuple[str, ...]] = ("name", "display_name", "has_label_set", "truncation")

    sequence_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "token_type_ids")

    # ---- data

    @abc.abstractmethod
    def encode(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        """Features (python lists, each with ``example_index``) of a split's examples."""

    def tokenize(self, tokenizer, a: list[str], b: list[str] | None, max_length: int) -> dict[str, list]:
        return with_segments(tokenizer(a, b, truncation=True, max_length=max_length))

    # ---- model

    @abc.abstractmethod
    def make_head(self, hidden: int, spec: TaskSpec, dropout: float) -> nn.Module:
        """The task head reading the method's hidden states."""

    # ---- every batch

    def collate(self, features: list[dict], pad_id: int) -> dict[str, Any]:
        """A batch: :attr:`sequence_keys` padded to the longest, plus ``example_index``."""
        batch: dict[str, Any] = collate_sequences(features, pad_id, self.sequence_keys)
        batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        return batch

    @abc.abstractmethod
    def logits(self, model, batch) -> torch.Tensor:
        """``model.head`` on ``model.encoder``'s hidden states of ``batch``."""

    @abc.abstractmethod
    def loss(self, logits, batch) -> torch.Tensor:
        """The training loss of a batch: a mean over its :meth:`loss_units`."""

    def loss_units(self, batch) -> int:
        """What :meth:`loss` averages over in ``batch`` (examples; NER: scored words), so that
        micro-batches weighted by it add up to the loss of their whole batch."""
        return int(batch["example_index"].shape[0])

    @abc.abstractmethod
    def decode(self, logits, batch) -> list:
        """One prediction per feature of the batch, as python values."""

    # ---- every evaluation

    @abc.abstractmethod
    def metric_inputs(self, preds, features, examples, spec: TaskSpec) -> M.MetricInputs:
        """Per-item metric arguments for ``preds`` (one per feature, from :meth:`decode`)."""

    @abc.abstractmethod
    def item_examples(self, features: list[dict], examples: list[dict]) -> list[int]:
        """The example index of each item of :meth:`metric_inputs`, in its order."""

    def score(self, preds, features, examples, spec: TaskSpec) -> dict[str, float]:
        """The task's metrics: exactly ``score_inputs(spec.metrics, metric_inputs(...))``."""
        return M.score_inputs(spec.metrics, self.metric_inputs(preds, features, examples, spec))


KIND_REGISTRY: Registry[type[Kind]] = Registry("task kind")


def register_kind(cls: type[Kind]) -> type[Kind]:
    """Class decorator: register a complete kind (every abstract method implemented) under its
    ``name``; it must state each of :attr:`Kind.FACTS` in its own class body."""
    if inspect.isabstract(cls):
        raise TypeError(f"task kind {cls.__name__} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    missing = [fact for fact in Kind.FACTS if fact not in vars(cls)]
    if missing:
        raise TypeError(f"task kind {cls.__name__} does not state {', '.join(missing)} in its class body (see Kind)")
    if cls.truncation not in TRUNCATIONS:
        raise ValueError(f"task kind {cls.name!r}: truncation {cls.truncation!r} is not one of {TRUNCATIONS}")
    return KIND_REGISTRY.register(cls.name, cls)


def _groups(examples: list[dict], features: list[dict]) -> Optional[list]:
    """Each feature's example ``group`` (MultiRC question id); None when no example has one."""
    groups = [examples[f["example_index"]].get("group") for f in features]
    return None if all(g is None for g in groups) else groups


@register_kind
class Classification(Kind):
    name = "classification"
    display_name = "classification"
    has_label_set = True
    truncation = "cut"

    def encode(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        a = [ex["text_a"] for ex in examples]
        b = [ex["text_b"] for ex in examples] if "text_b" in examples[0] else None
        enc = self.tokenize(tokenizer, a, b, max_length)
        return [
            {
                "input_ids": enc["input_ids"][i],
                "attention_mask": enc["attention_mask"][i],
                "token_type_ids": enc["token_type_ids"][i],
                "label": ex["label"],
                "example_index": i,
            }
            for i, ex in enumerate(examples)
        ]

    def collate(self, features, pad_id):
        batch = super().collate(features, pad_id)
        if features[0]["label"] is not None:
            batch["label"] = torch.tensor([f["label"] for f in features], dtype=self.label_dtype)
        return batch

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.long

    def out_dim(self, spec: TaskSpec) -> int:
        return spec.num_labels

    def make_head(self, hidden: int, spec: TaskSpec, dropout: float) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, self.out_dim(spec)))

    def logits(self, model, batch) -> torch.Tensor:
        h = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B,T,H)
        return model.head(model.pool(h, batch["attention_mask"]))  # (B,C)

    def loss(self, logits, batch) -> torch.Tensor:
        return F.cross_entropy(logits, batch["label"])

    def decode(self, logits, batch) -> list:
        return logits.argmax(-1).tolist()

    def metric_inputs(self, preds, features, examples, spec) -> M.MetricInputs:
        """One item per example: predicted vs gold label index (a float for regression),
        grouped by the example's ``group`` where it has one (MultiRC's question id)."""
        refs = [examples[f["example_index"]]["label"] for f in features]
        return M.MetricInputs(list(preds), refs, _groups(examples, features))

    def item_examples(self, features, examples) -> list[int]:
        """One item per feature (multiple choice too: a feature holds all of an example's choices)."""
        return [f["example_index"] for f in features]


@register_kind
class Regression(Classification):
    name = "regression"
    display_name = "regression"
    has_label_set = False  # a real-valued score: no majority class, no chance level
    truncation = "cut"

    @property
    def label_dtype(self) -> torch.dtype:
        return torch.float

    def out_dim(self, spec):
        return 1

    def logits(self, model, batch):
        return super().logits(model, batch).squeeze(-1)  # (B,)

    def loss(self, logits, batch):
        return F.mse_loss(logits, batch["label"])

    def decode(self, logits, batch):
        return logits.tolist()


@register_kind
class MultipleChoice(Classification):
    """Each (context, choice) pair is encoded; one score per pair; softmax over choices.

    Training target: ``label`` (cross-entropy), or, where an example lists several correct
    choices in ``gold`` (ReCoRD: every candidate entity that matches a gold answer), the
    *set* loss ``-log sum_{c in gold} softmax(logits)_c``: the probability of picking any
    correct choice is maximised, and no correct surface form is pushed down as a negative.
    With one correct choice the set loss is the cross-entropy.

    Scoring: the chosen index against ``label`` (accuracy), or, for a spec declaring
    ``options["score_text"]`` (ReCoRD), the chosen choice's string ``entities[i]``
    against the example's gold answer strings ``answers`` (the official text metrics;
    an example whose ``label`` is None but that has ``answers`` still scores, as a miss
    unless the chosen string matches a gold answer).
    """

    name = "multiple_choice"
    display_name = "multiple choice"
    has_label_set = True  # the choice index
    truncation = "cut"

    def encode(self, examples, tokenizer, max_length):
        feats = []
        for i, ex in enumerate(examples):
            enc = self.tokenize(tokenizer, [ex["text_a"]] * len(ex["choices"]), list(ex["choices"]), max_length)
            feat = {
                "input_ids": enc["input_ids"],  # C lists
                "attention_mask": enc["attention_mask"],
                "token_type_ids": enc["token_type_ids"],
                "label": ex["label"],
                "example_index": i,
            }
            if "gold" in ex:
                feat["gold"] = list(ex["gold"])
            feats.append(feat)
        return feats

    def collate(self, features, pad_id):
        # examples may have different numbers of choices (ReCoRD): repeat the last choice
        # to fill the batch and mask the repeats out of the softmax
        n_choices = max(len(f["input_ids"]) for f in features)
        flat = [
            {k: f[k][min(c, len(f[k]) - 1)] for k in self.sequence_keys} for f in features for c in range(n_choices)
        ]  # B*C pairs
        batch = collate_sequences(flat, pad_id, self.sequence_keys)
        batch = {k: v.view(len(features), n_choices, -1) for k, v in batch.items()}  # (B,C,T)
        batch["choice_mask"] = torch.tensor([[c < len(f["input_ids"]) for c in range(n_choices)] for f in features])
        batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        if all(f["label"] is not None for f in features):  # ReCoRD val keeps unmatched (label None) queries
            batch["label"] = torch.tensor([f["label"] for f in features])
        if all("gold" in f for f in features):
            batch["gold_mask"] = torch.tensor([[c in f["gold"] for c in range(n_choices)] for f in features])
        return batch

    def out_dim(self, spec):
        return 1

    def loss(self, logits, batch) -> torch.Tensor:
        if "gold_mask" not in batch:
            return F.cross_entropy(logits, batch["label"])
        return gold_set_loss(logits, batch["gold_mask"])

    def metric_inputs(self, preds, features, examples, spec) -> M.MetricInputs:
        if not spec.options.get("score_text"):
            return super().metric_inputs(preds, features, examples, spec)
        chosen, golds = [], []
        for p, f in zip(preds, features):
            ex = examples[f["example_index"]]
            chosen.append(ex["entities"][p])
            golds.append(list(ex["answers"]))
        return M.MetricInputs(chosen, golds, None)

    def logits(self, model, batch):
        b, c, t = batch["input_ids"].shape
        flat = {k: batch[k].view(b * c, t) for k in self.sequence_keys}
        h = model.encoder(flat["input_ids"], flat["attention_mask"], flat["token_type_ids"])  # (B*C,T,H)
        scores = model.head(model.pool(h, flat["attention_mask"])).view(b, c)  # (B,C)
        return scores.masked_fill(~batch["choice_mask"], -1e4)  # padded choices never win


def gold_set_loss(logits: torch.Tensor, gold_mask: torch.Tensor) -> torch.Tensor:
    """``-log sum_{c in gold} softmax(logits)_c`` averaged over the rows that have a gold choice.

    logits (B,C), gold_mask (B,C) bool. Rows without a gold choice carry no signal and are
    left out (a batch with none gives a zero loss that still has a graph).
    """
    has_gold = gold_mask.any(-1)
    if not has_gold.any():
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=-1)
    gold_log_p = torch.logsumexp(log_p.masked_fill(~gold_mask, float("-inf")), dim=-1)
    return -gold_log_p[has_gold].mean()


def kind_registry() -> Registry[type[Kind]]:
    """Every registered kind: those of this module, and those of :mod:`.sequence_kinds`
    (token classification, extractive QA), which register themselves when imported here."""
    try:
        importlib.import_module(f"{__package__}.sequence_kinds")
    except ModuleNotFoundError as e:  # pragma: no cover
        if e.name != f"{__package__}.sequence_kinds":
            raise
    return KIND_REGISTRY


def kind_class(name: str) -> type[Kind]:
    """The kind registered as ``name``: its facts need no instance (and no torch)."""
    return kind_registry().get(name)


def get_kind(name: str) -> Kind:
    return kind_class(name)()
