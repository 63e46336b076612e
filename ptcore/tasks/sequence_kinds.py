"""Per-token task kinds: token classification (NER) and extractive QA (SQuAD).

Both read the encoder's hidden states at every input token. Methods strip their prompt
positions before returning them (see :mod:`ptcore.methods.base`), so the heads, labels and
answer offsets below are the same for every method: position t is input token t.

Features carry python lists only (the feature cache stores them as JSON); batches carry
tensors plus, for QA, the offset mappings as plain lists (``train.py`` moves tensors only).
Neither ``encode`` nor ``decode`` sees the spec: what ``encode`` needs from it travels
with the examples (``tag_ids`` from :func:`ptcore.tasks.ner.ner_example`; ``doc_stride``
and ``max_query_length`` from :func:`ptcore.tasks.qa.qa_example`); ``metric_inputs`` (and
``score``, which scores them) gets the spec and turns indices into tags / spans.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import metrics as M
from ..errors import ConfigError
from ..lazy import LazyModule
from .base import TaskSpec
from .kinds import Kind, collate_sequences, pad, register_kind, with_segments

if TYPE_CHECKING:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
else:  # imported on first use: the kinds' facts load without torch
    torch, nn, F = LazyModule("torch"), LazyModule("torch.nn"), LazyModule("torch.nn.functional")

IGNORE = -100  # label of positions that are not scored (special tokens, non-first sub-words)
MASKED_LOGIT = -1e4  # padding positions of QA start/end logits (finite: safe in half precision)


def _require_fast(tokenizer, what: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{what} needs a fast (Rust 'tokenizers') tokenizer for word ids / offsets; {type(tokenizer).__name__} is not")


def word_prefix(tokenizer) -> str:
    """``" "`` for a byte-level BPE tokenizer (RoBERTa, GPT-2) built without
    ``add_prefix_space``, else ``""``.

    Such a tokenizer encodes the space before a word into the word's first piece
    (``Ġword``). Given pre-split words it would encode each as if it began the text
    (``word``), which the model never saw mid-sentence. Prefixing a space to every word
    gives the pieces ``add_prefix_space=True`` would, without re-loading the tokenizer;
    ``word_ids`` still map every piece to its word.
    """
    try:
        mid = tokenizer.convert_ids_to_tokens(tokenizer("a b", add_special_tokens=False)["input_ids"])
        alone = tokenizer.convert_ids_to_tokens(tokenizer(["b"], is_split_into_words=True, add_special_tokens=False)["input_ids"])
    except Exception:  # pragma: no cover - exotic tokenizers: leave words alone
        return ""
    if mid and str(mid[-1]).startswith("Ġ") and alone and not str(alone[0]).startswith("Ġ"):
        return " "
    return ""


# ---------------------------------------------------------------- token classification


@register_kind
class TokenClassification(Kind):
    """One tag per word, predicted at the word's *first* sub-word.

    Feature keys: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels`` (tag
    index at first sub-words, -100 elsewhere), ``word_index`` (the word a first sub-word
    starts, -1 elsewhere), ``example_index``. Words cut off by the token limit (or that
    the tokenizer maps to no piece at all) are predicted ``O`` when scoring, so the scored
    sequence always has the gold length.
    """

    name = "token_classification"
    display_name = "token classification"
    has_label_set = False  # one tag per word: scored by entity F1, no majority class or chance level
    truncation = "words"
    sequence_keys = ("input_ids", "attention_mask", "token_type_ids", "labels")

    def encode(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        _require_fast(tokenizer, "token classification")
        prefix = word_prefix(tokenizer)
        words = [[prefix + w for w in ex["tokens"]] for ex in examples]
        enc = with_segments(tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length))
        feats = []
        for i, ex in enumerate(examples):
            tag_ids = ex.get("tag_ids")
            labels, word_index, prev = [], [], None
            for w in enc.word_ids(i):
                first = w is not None and w != prev
                word_index.append(w if first else -1)
                labels.append(tag_ids[w] if first and tag_ids is not None else IGNORE)
                prev = w
            ids = enc["input_ids"][i]
            feats.append(
                {
                    "input_ids": ids,
                    "attention_mask": enc["attention_mask"][i],
                    "token_type_ids": enc["token_type_ids"][i],
                    "labels": labels,
                    "word_index": word_index,
                    "example_index": i,
                }
            )
        return feats

    def collate(self, features: list[dict], pad_id: int) -> dict[str, Any]:
        batch = super().collate(features, pad_id)
        batch["word_index"] = pad([f["word_index"] for f in features], -1)
        return batch

    def make_head(self, hidden: int, spec: TaskSpec, dropout: float) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, spec.num_labels))

    def logits(self, model, batch) -> torch.Tensor:
        h = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B,T,H)
        return model.head(h)  # (B,T,C)

    def loss_units(self, batch) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss(self, logits, batch) -> torch.Tensor:
        labels = batch["labels"]  # (B,T)
        if not (labels != IGNORE).any():  # no scored word in the batch: no signal, not NaN
            return logits.sum() * 0.0
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)

    def decode(self, logits, batch) -> list[list[int]]:
        """Per feature: the predicted tag index of words 0..k (-1: word without a piece)."""
        pred = logits.argmax(-1).tolist()  # (B,T)
        out = []
        for row_pred, row_word in zip(pred, batch["word_index"].tolist()):
            pairs = [(w, p) for w, p in zip(row_word, row_pred) if w >= 0]
            tags = [-1] * (max((w for w, _ in pairs), default=-1) + 1)
            for w, p in pairs:
                tags[w] = p
            out.append(tags)
        return out

    def metric_inputs(self, preds, features, examples, spec) -> M.MetricInputs:
        """One item per labelled sentence: predicted vs gold IOB2 tag strings, of the gold
        length (words without a prediction are ``O``); unlabelled sentences are skipped."""
        predicted, gold = [], []
        for p, f in zip(preds, features):
            ex = examples[f["example_index"]]
            if ex.get("tags") is None:  # unlabelled sentence
                continue
            seq = ["O"] * len(ex["tokens"])
            for w, t in enumerate(p[: len(seq)]):
                if t >= 0:
                    seq[w] = spec.labels[t]
            predicted.append(seq)
            gold.append(list(ex["tags"]))
        return M.MetricInputs(predicted, gold, None)  # none labelled: score_inputs gives NaN

    def item_examples(self, features, examples) -> list[int]:
        """One item per labelled sentence, as :meth:`metric_inputs` skips the others."""
        return [f["example_index"] for f in features if examples[f["example_index"]].get("tags") is not None]


# ---------------------------------------------------------------- extractive QA


@register_kind
class ExtractiveQA(Kind):
    """Start/end logits over the context tokens of ``[CLS] question [SEP] context [SEP]``.

    A context longer than the limit becomes overlapping windows (Hugging Face's
    ``return_overflowing_tokens`` with ``stride`` = the example's ``doc_stride``, reduced
    when the limit is too short for it). Feature keys: ``input_ids``, ``attention_mask``,
    ``token_type_ids``, ``offset_mapping`` (``[start, end]`` chars into the context for
    context tokens, None elsewhere), ``start_positions`` / ``end_positions`` (the first
    answer's tokens; 0 = [CLS] when the window does not hold the answer or there is
    none), ``example_index``.
    """

    name = "extractive_qa"
    display_name = "extractive QA"
    has_label_set = False  # answers are spans of the context
    truncation = "windows"
    DOC_STRIDE = 128
    MAX_QUERY_LENGTH = 64

    def _questions(self, examples: list[dict], tokenizer, cap: int) -> list[str]:
        """Questions without leading whitespace (SQuAD 2.0 has some), cut to ``cap`` tokens."""
        questions = [ex["question"].lstrip() for ex in examples]
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        for i, ex in enumerate(examples):
            limit = min(cap, int(ex.get("max_query_length", self.MAX_QUERY_LENGTH)))
            if len(enc["input_ids"][i]) > limit:
                questions[i] = questions[i][: enc["offset_mapping"][i][limit - 1][1]]
        return questions

    def encode(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        _require_fast(tokenizer, "extractive QA")
        body = max_length - tokenizer.num_special_tokens_to_add(pair=True)  # question + context tokens
        if body < 8:
            raise ConfigError(f"extractive QA: max_length {max_length} leaves no room for a question and a context window")
        questions = self._questions(examples, tokenizer, cap=body // 2)
        q_lens = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        # the stride must be shorter than the context window: group examples by the stride they get
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for i, ex in enumerate(examples):
            window = body - q_lens[i]
            groups[max(0, min(int(ex.get("doc_stride", self.DOC_STRIDE)), window // 2))].append(i)
        feats: list[dict] = []
        for stride, members in sorted(groups.items()):
            enc = with_segments(tokenizer(
                [questions[i] for i in members],
                [examples[i]["context"] for i in members],
                truncation="only_second",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            ))
            for j, sample in enumerate(enc["overflow_to_sample_mapping"]):
                i = members[sample]
                feats.append(self._feature(enc, j, i, examples[i]))
        feats.sort(key=lambda f: f["example_index"])  # stable: windows stay in context order
        return feats

    @staticmethod
    def _feature(enc, j: int, i: int, ex: dict) -> dict:
        ids = enc["input_ids"][j]
        seq = enc.sequence_ids(j)
        offsets = [list(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][j], seq)]
        context_tokens = [k for k, o in enumerate(offsets) if o is not None]
        start = end = 0
        answers = ex["answers"]
        if answers["text"] and context_tokens:
            a = answers["answer_start"][0]
            b = a + len(answers["text"][0])
            first, last = offsets[context_tokens[0]], offsets[context_tokens[-1]]
            if first[0] <= a and last[1] >= b:  # the whole answer is inside this window
                inside = [k for k in context_tokens if offsets[k][1] > a and offsets[k][0] < b]
                if inside:
                    start, end = inside[0], inside[-1]
        return {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"][j],
            "token_type_ids": enc["token_type_ids"][j],
            "offset_mapping": offsets,
            "start_positions": start,
            "end_positions": end,
            "example_index": i,
        }

    def collate(self, features: list[dict], pad_id: int) -> dict[str, Any]:
        batch: dict[str, Any] = collate_sequences(features, pad_id, self.sequence_keys)
        batch["example_index"] = torch.tensor([f["example_index"] for f in features])
        batch["start_positions"] = torch.tensor([f["start_positions"] for f in features])
        batch["end_positions"] = torch.tensor([f["end_positions"] for f in features])
        batch["offset_mapping"] = [f["offset_mapping"] for f in features]  # lists stay lists
        return batch

    def make_head(self, hidden: int, spec: TaskSpec, dropout: float) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 2))

    def logits(self, model, batch) -> torch.Tensor:
        h = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (B,T,H)
        out = model.head(h)  # (B,T,2): start, end
        return out.masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, MASKED_LOGIT)

    def loss(self, logits, batch) -> torch.Tensor:
        start = F.cross_entropy(logits[..., 0], batch["start_positions"])
        end = F.cross_entropy(logits[..., 1], batch["end_positions"])
        return (start + end) / 2

    def decode(self, logits, batch) -> list[dict]:
        """Per feature: ``{"start", "end"}`` float32 logits over its real tokens (numpy)."""
        lengths = batch["attention_mask"].sum(1).tolist()
        arr = logits.detach().float().cpu().numpy()
        return [{"start": arr[b, :n, 0].copy(), "end": arr[b, :n, 1].copy()} for b, n in enumerate(lengths)]

    @staticmethod
    def best_answer(items: list[tuple[dict, dict]], context: str, n_best: int, max_answer_length: int, with_null: bool) -> str:
        """The best span over the windows of one question (Hugging Face's postprocessing)."""
        best_score, best_text = -math.inf, ""
        null_score = math.inf
        for pred, feat in items:
            s_log, e_log = pred["start"], pred["end"]
            offsets = feat["offset_mapping"][: len(s_log)]
            null_score = min(null_score, float(s_log[0] + e_log[0]))
            valid = np.array([o is not None for o in offsets])
            si = np.argsort(-s_log, kind="stable")[:n_best]
            ei = np.argsort(-e_log, kind="stable")[:n_best]
            span = ei[None, :] - si[:, None]  # end - start, (n, n)
            ok = valid[si][:, None] & valid[ei][None, :] & (span >= 0) & (span < max_answer_length)
            if not ok.any():
                continue
            scores = np.where(ok, s_log[si][:, None] + e_log[ei][None, :], -np.inf)
            a, b = np.unravel_index(int(np.argmax(scores)), scores.shape)
            if scores[a, b] > best_score:
                best_score = float(scores[a, b])
                best_text = context[offsets[si[a]][0] : offsets[ei[b]][1]]
        if with_null and null_score > best_score:
            return ""
        return best_text

    def predict(self, preds, features, examples, spec) -> dict[int, str]:
        """Example index -> predicted answer text ("" = no answer)."""
        opts = spec.options
        per_example: dict[int, list] = collections.defaultdict(list)
        for p, f in zip(preds, features):
            per_example[f["example_index"]].append((p, f))
        return {
            i: self.best_answer(
                items,
                examples[i]["context"],
                int(opts.get("n_best", 20)),
                int(opts.get("max_answer_length", 30)),
                bool(opts.get("version_2_with_negative", False)),
            )
            for i, items in per_example.items()
        }

    def metric_inputs(self, preds, features, examples, spec) -> M.MetricInputs:
        """One item per question (in example order): the predicted answer string ("" = no
        answer) vs the list of gold answer strings ([] = unanswerable)."""
        answers = self.predict(preds, features, examples, spec)
        indices = sorted(answers)
        return M.MetricInputs([answers[i] for i in indices], [list(examples[i]["answers"]["text"]) for i in indices], None)

    def item_examples(self, features, examples) -> list[int]:
        """One item per question (its windows are one item), in example order."""
        return sorted({f["example_index"] for f in features})
