"""Text-to-text task kinds: a T5 or a decoder LM reads the task as text and writes its answer.

A run's ``format`` (``RunConfig.format``) picks how a task is trained: ``head`` (the
task's own kind, a head on hidden states) or ``text`` (a kind of this module, built by
:func:`kind_for` from the task's declared ``template`` and ``verbalizer`` / ``target``,
:mod:`ptcore.tasks.templates`):

* :class:`RankClassification` for classification and multiple-choice tasks: every label's
  (choice's) target text is scored by its log-likelihood under the model, the sum over its
  tokens, end token included; the prediction is the most likely label (rank
  classification, as T5's own SuperGLUE evaluation and lm-evaluation-harness do). Training
  minimises the gold target's token-averaged negative log-likelihood (teacher forcing).
* :class:`Generation` for extractive QA and any task with a free-text ``target``: trained
  by teacher forcing toward the first gold answer, evaluated by greedy generation and the
  task's own metrics (SQuAD: the official EM and F1, max over the gold answers).

Batches differ by family. T5 (``seq2seq``): the sources, right-padded, and the targets as
``labels`` (-100 padding) with ``rows``, the source of each target. A decoder LM: source and
target concatenated into one row, left-padded, with ``target_mask`` over the target's
tokens; generation reads the left-padded sources alone. The family's runner does the rest
(``model.encoder.runner``, :mod:`ptcore.families`).

A text kind is built per run with the family and tokenizer (its targets end with the
tokenizer's end token, and generation decodes with it), unlike the head kinds, which are
registered and built by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .. import metrics as M
from ..errors import ConfigError
from ..families import FAMILIES
from ..lazy import LazyModule
from .kinds import Classification, Kind, kind_class, pad
from .templates import gold_texts, label_targets, render_input, train_target

if TYPE_CHECKING:
    from .base import TaskSpec
    import torch
    import torch.nn as nn
else:  # imported on first use: the module loads without torch
    torch, nn = LazyModule("torch"), LazyModule("torch.nn")

FORMATS = ("auto", "head", "text")
DEFAULT_MAX_NEW_TOKENS = 32  # generation: a task may set options["max_new_tokens"]


def left_pad(seqs: list[list[int]], value: int) -> "torch.Tensor":
    """Left-pad int sequences to the longest. -> (B, Tmax)"""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
    return out


class TextKind(Kind):
    """What the text kinds share: a spec's template, the family's batch layout, the tokenizer."""

    sequence_keys = ()

    def __init__(self, spec: TaskSpec, tokenizer, seq2seq: bool):
        self.spec = spec
        self.tokenizer = tokenizer
        self.seq2seq = seq2seq
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError(f"task {spec.name}: the tokenizer has no end-of-sequence token; a text-to-text target needs one")
        self.eos = eos

    @property
    def cache_tag(self) -> str:
        """What the cached features depend on beyond the task and tokenizer (see ptcore.data)."""
        return f"{self.name}:{'seq2seq' if self.seq2seq else 'decoder'}:{self.spec.template}:{self.spec.verbalizer}:{self.spec.target}"

    def note(self) -> str:
        """One line for the run's data notes (and so the report): how the task was read as text."""
        spec = self.spec
        how = (f"rank classification over the label words {' / '.join(spec.verbalizer)}" if isinstance(self, RankClassification)
               else f"greedy generation (up to {self.max_new_tokens} tokens) scored against every gold answer")
        return f"text to text: {how}; input template {spec.template!r} ({spec.template_source or 'declared'})"

    def source_ids(self, source: str, max_length: int) -> list[int]:
        """The rendered input (``render_input``), tokenized (T5: ends with its end token; Llama:
        starts with BOS), cut to ``max_length``."""
        return self.tokenizer(source, truncation=True, max_length=max_length)["input_ids"]

    def target_ids(self, text: str, source: Optional[str] = None) -> list[int]:
        """A target's tokens, ending with the end token. T5 reads it as its own sequence. A decoder
        LM reads it after the source, one space between: its tokens are those the joint text
        ``source + " " + text`` has after the source's own (as lm-evaluation-harness splits a
        context and its continuation), so a tokenizer that marks word starts (SentencePiece's
        "▁") gives the target the tokens it has in running text; where the joint tokens do not
        begin with the source's, the target is tokenized alone."""
        if self.seq2seq:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        elif source is not None and text:
            src = self.tokenizer(source)["input_ids"]
            joint = self.tokenizer(f"{source} {text}")["input_ids"]
            if len(joint) > len(src) and joint[: len(src)] == src:
                ids = joint[len(src):]
            else:
                ids = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(" " + text if text else "", add_special_tokens=False)["input_ids"]
        return list(ids) + [self.eos]

    def make_head(self, hidden: int, spec: TaskSpec, dropout: float) -> nn.Module:
        """No head: the model's own LM head writes the answer."""
        return nn.Identity()

    # the rows of a batch: T5 sources and targets apart, a decoder's joined

    def pair_batch(self, sources: list[list[int]], targets: list[list[int]], rows: list[int], pad_id: int) -> dict[str, Any]:
        """``targets[m]`` is read after ``sources[rows[m]]``."""
        if self.seq2seq:
            ids = pad(sources, pad_id)  # (N,T) right-padded
            return {
                "input_ids": ids,
                "attention_mask": (pad([[1] * len(s) for s in sources], 0)),
                "labels": pad(targets, -100),  # (M,Tl)
                "rows": torch.tensor(rows, dtype=torch.long),
            }
        joined = [sources[r] + t for r, t in zip(rows, targets)]
        return {
            "input_ids": left_pad(joined, pad_id),  # (M,S)
            "attention_mask": left_pad([[1] * len(j) for j in joined], 0),
            "target_mask": left_pad([[0] * len(sources[r]) + [1] * len(t) for r, t in zip(rows, targets)], 0),
        }


class RankClassification(TextKind, Classification):
    """Classification / multiple choice by the log-likelihood of each label's words (see module doc)."""

    name = "rank_classification"
    display_name = "rank classification"
    has_label_set = True
    truncation = "cut"

    def encode(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        words = label_targets(self.spec)
        shared = [self.target_ids(w) for w in words] if self.seq2seq else None  # T5: the same for every example
        feats = []
        for i, ex in enumerate(examples):
            if ex.get("choices") is not None and len(ex["choices"]) != len(words):
                train_target(self.spec, ex)  # raises the one-line verbalizer/choices mismatch
            source = render_input(self.spec, ex)
            targets = shared or [self.target_ids(w, source) for w in words]
            # a decoder reads the target after the source: the source makes room for the longest
            room = max_length if self.seq2seq else max(max_length - max(len(t) for t in targets), 1)
            feats.append({"input_ids": self.source_ids(source, room), "targets": targets, "label": ex.get("label"), "example_index": i})
        return feats

    def collate(self, features: list[dict], pad_id: int) -> dict[str, Any]:
        c = len(features[0]["targets"])
        sources = [f["input_ids"] for f in features]
        targets = [t for f in features for t in f["targets"]]  # N*C, label order within each example
        batch = self.pair_batch(sources, targets, [i for i in range(len(features)) for _ in range(c)], pad_id)
        batch["target_len"] = torch.tensor([[len(t) for t in f["targets"]] for f in features])  # (N,C)
        batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        if all(f["label"] is not None for f in features):
            batch["label"] = torch.tensor([f["label"] for f in features])
        return batch

    def logits(self, model, batch) -> torch.Tensor:
        """(N,C): the summed log-likelihood of each label's target."""
        lp = model.encoder.runner.target_logprobs(batch)  # (N*C, T)
        return lp.sum(-1).view(batch["target_len"].shape)

    def loss(self, logits, batch) -> torch.Tensor:
        """The gold target's negative log-likelihood per token, averaged over the examples."""
        gold = batch["label"].unsqueeze(1)  # (N,1)
        return (-logits.gather(1, gold) / batch["target_len"].gather(1, gold).to(logits.dtype)).mean()

    def decode(self, logits, batch) -> list:
        return logits.argmax(-1).tolist()


class Generation(TextKind):
    """Free-text answers: teacher forcing in training, greedy generation in evaluation (see module doc)."""

    name = "generation"
    display_name = "generation"
    has_label_set = False
    truncation = "cut"

    @property
    def max_new_tokens(self) -> int:
        return int(self.spec.options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))

    def encode(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        feats = []
        for i, ex in enumerate(examples):
            source = render_input(self.spec, ex)
            target = self.target_ids(train_target(self.spec, ex), source)[: self.max_new_tokens]
            room = max_length if self.seq2seq else max(max_length - len(target), 1)
            feats.append({"input_ids": self.source_ids(source, room), "target": target, "example_index": i})
        return feats

    def collate(self, features: list[dict], pad_id: int) -> dict[str, Any]:
        sources = [f["input_ids"] for f in features]
        batch = self.pair_batch(sources, [f["target"] for f in features], list(range(len(features))), pad_id)
        if not self.seq2seq:  # generation reads the sources alone, left-padded
            batch["source_ids"] = left_pad(sources, pad_id)
            batch["source_mask"] = left_pad([[1] * len(s) for s in sources], 0)
        batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        return batch

    def logits(self, model, batch):
        """Training: (N,T) log p of each target token (teacher forcing). Evaluation: the greedy
        answer's token ids, one list per row."""
        runner = model.encoder.runner
        if model.training:
            return runner.target_logprobs(batch)
        ids, mask = (batch["input_ids"], batch["attention_mask"]) if self.seq2seq else (batch["source_ids"], batch["source_mask"])
        return runner.generate(ids, mask, self.max_new_tokens)

    def loss(self, logits, batch) -> torch.Tensor:
        """Token-averaged negative log-likelihood of the targets."""
        count = (batch["labels"] >= 0).sum() if self.seq2seq else batch["target_mask"][:, 1:].sum()
        return -logits.sum() / count.clamp(min=1).to(logits.dtype)

    def loss_units(self, batch) -> int:
        """The target tokens :meth:`loss` averages over (micro-batches weighted by them add up to the batch's loss)."""
        return int((batch["labels"] >= 0).sum() if self.seq2seq else batch["target_mask"][:, 1:].sum())

    def decode(self, logits, batch) -> list:
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in logits]

    def metric_inputs(self, preds, features, examples, spec) -> M.MetricInputs:
        """One item per example: the generated text vs every gold text."""
        refs = [gold_texts(self.spec, examples[f["example_index"]]) for f in features]
        return M.MetricInputs(list(preds), refs, None)

    def item_examples(self, features, examples) -> list[int]:
        return [f["example_index"] for f in features]


TEXT_KINDS = {"classification": RankClassification, "multiple_choice": RankClassification, "extractive_qa": Generation}


def resolve_format(fmt: str, family) -> str:
    """``auto`` -> the family's default; a format the family cannot run: one line."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "auto":
        return family.default_format
    if fmt not in family.formats:
        raise ConfigError(
            f"format {fmt!r} does not run on the {family.name} family (it runs: {', '.join(family.formats)}); "
            f"set format: {family.default_format}"
        )
    return fmt


def text_kind_class(spec: TaskSpec, fmt: str, family) -> Optional[type[TextKind]]:
    """The text kind that trains ``spec`` in ``fmt`` on ``family`` (None: format head, the task's
    own kind); what cannot run raises one ConfigError line. Needs no model and no torch."""
    if resolve_format(fmt, family) == "head":
        return None
    cls = TEXT_KINDS.get(spec.kind)
    if cls is None:
        raise ConfigError(
            f"task {spec.name} ({kind_class(spec.kind).display_name}) has no text-to-text format; text runs "
            f"{', '.join(sorted(TEXT_KINDS))} tasks: train it with format: head on an encoder or decoder"
        )
    if cls is RankClassification:
        label_targets(spec)  # one line where the task declares no label words
    if spec.template is None:
        render_input(spec, {})  # one line: no template
    return cls


def kind_for(spec: TaskSpec, fmt: str, family, tokenizer) -> Kind:
    """The kind a run trains ``spec`` with: its own (``head``), or its text kind (``text``)."""
    cls = text_kind_class(spec, fmt, family)
    return kind_class(spec.kind)() if cls is None else cls(spec, tokenizer, seq2seq=family.seq2seq)


def check_format(spec: TaskSpec, fmt: str, family_name: Optional[str]) -> Optional[str]:
    """Why ``spec`` cannot run in ``fmt`` on the family ``family_name`` (no model, no torch), or None."""
    if family_name is None:
        return None
    try:
        text_kind_class(spec, fmt, FAMILIES.get(family_name)())
    except ConfigError as e:
        return str(e)
    return None
