"""Task kinds: how examples become tensors, which head reads the encoder, the loss, and
how predictions are scored. Shared by every method (methods only produce hidden states).

A kind implements:

``encode(examples, tokenizer, max_length) -> features``
    one or more feature dicts (python lists) per example, each with ``example_index``.
``collate(features, pad_id) -> batch``      dynamic padding to the longest in the batch.
``make_head(hidden, spec, dropout) -> nn.Module``
``logits(model, batch) -> Tensor``          runs ``model.encoder`` + ``model.head``.
``loss(logits, batch) -> Tensor``
``decode(logits, batch) -> list``           per-feature predictions (python values).
``metric_inputs(preds, features, examples, spec) -> MetricInputs``
    the per-item predictions / references / groups the task's metric functions take
    (plain JSON: a run can store them and a report can bootstrap over items).
``item_examples(features, examples) -> list[int]``
    the example index of each item ``metric_inputs`` returns, in its order (what a
    predictions file keys its lines by).
``score(preds, features, examples, spec) -> {metric: value}``
    ``score_inputs(spec.metrics, metric_inputs(...))``.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import metrics as M
from ..registry import Registry
from .base import TaskSpec

KIND_REGISTRY: Registry["Kind"] = Registry("task kind")

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


class Kind:
    name: str = ""
    sequence_keys = ("input_ids", "attention_mask", "token_type_ids")

    def tokenize(self, tokenizer, a: list[str], b: list[str] | None, max_length: int) -> dict[str, list]:
        return with_segments(tokenizer(a, b, truncation=True, max_length=max_length))

    def collate(self, features: list[dict], pad_id: int) -> dict[str, Any]:
        batch: dict[str, Any] = collate_sequences(features, pad_id, self.sequence_keys)
        batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        return batch

    def loss_units(self, batch) -> int:
        """What :meth:`loss` averages over in ``batch`` (examples; NER: scored words), so that
        micro-batches weighted by it add up to the loss of their whole batch."""
        return int(batch["example_index"].shape[0])

    def metric_inputs(self, preds, features, examples, spec: TaskSpec) -> M.MetricInputs:
        """Per-item metric arguments for ``preds`` (one per feature, from :meth:`decode`)."""
        raise NotImplementedError(f"task kind {self.name!r} does not define metric_inputs")

    def item_examples(self, features: list[dict], examples: list[dict]) -> list[int]:
        """The example index of each item of :meth:`metric_inputs`, in its order."""
        raise NotImplementedError(f"task kind {self.name!r} does not define item_examples")

    def score(self, preds, features, examples, spec: TaskSpec) -> dict[str, float]:
        """The task's metrics: exactly ``score_inputs(spec.metrics, metric_inputs(...))``."""
        return M.score_inputs(spec.metrics, self.metric_inputs(preds, features, examples, spec))


def _groups(examples: list[dict], features: list[dict]) -> Optional[list]:
    """Each feature's example ``group`` (MultiRC question id); None when no example has one."""
    groups = [examples[f["example_index"]].get("group") for f in features]
    return None if all(g is None for g in groups) else groups


@KIND_REGISTRY.register("classification")
class Classification(Kind):
    name = "classification"

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

    label_dtype = torch.long

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


@KIND_REGISTRY.register("regression")
class Regression(Classification):
    name = "regression"
    label_dtype = torch.float

    def out_dim(self, spec):
        return 1

    def logits(self, model, batch):
        return super().logits(model, batch).squeeze(-1)  # (B,)

    def loss(self, logits, batch):
        return F.mse_loss(logits, batch["label"])

    def decode(self, logits, batch):
        return logits.tolist()


@KIND_REGISTRY.register("multiple_choice")
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


def get_kind(name: str) -> Kind:
    try:  # token classification and extractive QA register themselves on import
        importlib.import_module(f"{__package__}.sequence_kinds")
    except ModuleNotFoundError as e:  # pragma: no cover
        if e.name != f"{__package__}.sequence_kinds":
            raise
    return KIND_REGISTRY.get(name)()
