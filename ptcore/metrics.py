"""Official task metrics, by name.

Each metric is ``fn(predictions, references, groups=None) -> float`` where predictions
and references are per-example values (label indices, floats, tag sequences, answer
strings...). They wrap scikit-learn / scipy / seqeval, except:

* MultiRC's F1a/EM, SQuAD's EM/F1 and ReCoRD's EM/F1, because no maintained library on
  PyPI implements those official scripts offline (HF ``evaluate`` downloads them from the
  hub at run time);
* accuracy and (macro-)F1 of label indices, a few lines of numpy, because importing
  scikit-learn (and scipy with it) costs 1.5-3 s of CPU in every fresh process, and a
  study starts a fresh Ray Train worker per trial. tests/test_metrics.py checks them
  against scikit-learn.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from .registry import Registry

MetricFn = Callable[..., float]
METRICS: Registry[MetricFn] = Registry("metric")


@METRICS.register("accuracy")
def accuracy(predictions: Sequence, references: Sequence, groups=None) -> float:
    p, r = np.asarray(predictions), np.asarray(references)
    return float((p == r).mean()) if len(r) else 0.0


def _class_f1(p: np.ndarray, r: np.ndarray, label) -> float:
    """F1 of one class; 0 where it is undefined (sklearn's ``zero_division=0``)."""
    tp = float(np.sum((p == label) & (r == label)))
    denominator = float(np.sum(p == label) + np.sum(r == label))  # 2tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


@METRICS.register("f1")
def binary_f1(predictions: Sequence, references: Sequence, groups=None) -> float:
    """F1 of the positive class (label index 1), as GLUE reports for MRPC and QQP."""
    return _class_f1(np.asarray(predictions), np.asarray(references), 1)


@METRICS.register("macro_f1")
def macro_f1(predictions: Sequence, references: Sequence, groups=None) -> float:
    """Unweighted mean of per-class F1 (SuperGLUE's CB F1), over the classes present in the references."""
    p, r = np.asarray(predictions), np.asarray(references)
    labels = sorted(set(r.tolist()))
    return float(np.mean([_class_f1(p, r, c) for c in labels])) if labels else 0.0


@METRICS.register("mcc")
def matthews(predictions: Sequence, references: Sequence, groups=None) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(references, predictions))


def _corr(fn, predictions, references) -> float:
    p, r = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    if p.std() == 0 or r.std() == 0:
        return 0.0  # constant predictions: correlation undefined; report 0 rather than NaN
    return float(fn(p, r)[0])


@METRICS.register("pearson")
def pearson(predictions, references, groups=None) -> float:
    from scipy.stats import pearsonr

    return _corr(pearsonr, predictions, references)


@METRICS.register("spearman")
def spearman(predictions, references, groups=None) -> float:
    from scipy.stats import spearmanr

    return _corr(spearmanr, predictions, references)


@METRICS.register("f1a")
def multirc_f1a(predictions, references, groups=None) -> float:
    """MultiRC F1a: binary F1 over all answer options (positive class = 1)."""
    return binary_f1(predictions, references)


@METRICS.register("em")
def multirc_em(predictions, references, groups: Optional[Sequence] = None) -> float:
    """MultiRC exact match: a question counts only if all its answer options are right."""
    if groups is None:
        raise ValueError("multirc 'em' needs the question id of every answer option (groups)")
    per_q: dict[Any, bool] = collections.defaultdict(lambda: True)
    for p, r, g in zip(predictions, references, groups):
        per_q[g] &= p == r
    return float(np.mean(list(per_q.values()))) if per_q else 0.0


def compute(names: Sequence[str], predictions, references, groups=None) -> dict[str, float]:
    return {n: METRICS.get(n)(predictions, references, groups=groups) for n in names}


# ---------------------------------------------------------------- per-item metric inputs


@dataclass(frozen=True)
class MetricInputs:
    """The per-item arguments of a task's metric functions, one entry per scored item.

    ``predictions[i]`` / ``references[i]`` are what ``METRICS.get(name)`` takes for item
    ``i`` (a label index, a float, a tag list, an answer string vs a list of gold strings);
    ``groups[i]`` is the item's resampling unit (MultiRC: its question id, which ``em``
    needs), or ``groups`` is None when every item is its own unit. Everything is plain
    JSON (ints, floats, strings, lists), so a run can store the inputs of a split and a
    report can resample items, or whole groups, and recompute a metric
    (:func:`score_inputs`). Iterating yields ``predictions, references, groups``, so
    ``compute(names, *inputs)`` works.

    ``clusters[i]`` is the passage item ``i`` is about, as a string (MultiRC: its paragraph;
    see ``TaskSpec.passage``), or ``clusters`` is None for a task without passages: no metric
    reads it; a report's bootstrap resamples whole clusters (items about one passage are not
    independent). ``groups`` stays what the metric needs (MultiRC's question).
    """

    predictions: list
    references: list
    groups: Optional[list] = None
    clusters: Optional[list] = None

    def __post_init__(self) -> None:
        for name in ("predictions", "references", "groups", "clusters"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, list(value))
        n = len(self.predictions)
        per_item = [(name, getattr(self, name)) for name in ("groups", "clusters") if getattr(self, name) is not None]
        if len(self.references) != n or any(len(v) != n for _, v in per_item):
            sizes = f"{n} predictions, {len(self.references)} references" + "".join(f", {len(v)} {name}" for name, v in per_item)
            raise ValueError(f"metric inputs must have one entry per item; got {sizes}")

    def __iter__(self) -> Iterator[Optional[list]]:
        return iter((self.predictions, self.references, self.groups))

    def __len__(self) -> int:
        return len(self.predictions)

    def as_dict(self) -> dict[str, Any]:
        """``{"predictions", "references", "groups"}`` and ``"clusters"`` where the task has
        passages, ready for ``json.dump``."""
        out = asdict(self)
        if out["clusters"] is None:
            del out["clusters"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricInputs":
        return cls(data["predictions"], data["references"], data.get("groups"), data.get("clusters"))


def score_inputs(names: Sequence[str], inputs: MetricInputs) -> dict[str, float]:
    """Each metric in ``names`` over ``inputs`` (what a task kind's ``score`` returns);
    NaN for every metric when there is no item (a split without a labelled example)."""
    if not len(inputs):
        return {n: float("nan") for n in names}
    return compute(names, *inputs)


# ---------------------------------------------------------------- sequence labelling (seqeval)
# predictions / references: one list of IOB2 tag strings per sentence, of equal lengths.
# seqeval's default mode (conlleval's chunking), micro-averaged over entities.


def _seqeval(fn_name: str, predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    import seqeval.metrics

    fn = getattr(seqeval.metrics, fn_name)
    return float(fn([list(r) for r in references], [list(p) for p in predictions], zero_division=0))


@METRICS.register("entity_f1")
def entity_f1(predictions, references, groups=None) -> float:
    return _seqeval("f1_score", predictions, references)


@METRICS.register("entity_precision")
def entity_precision(predictions, references, groups=None) -> float:
    return _seqeval("precision_score", predictions, references)


@METRICS.register("entity_recall")
def entity_recall(predictions, references, groups=None) -> float:
    return _seqeval("recall_score", predictions, references)


# ---------------------------------------------------------------- SQuAD (official evaluate-v2.0.py)
# predictions: one answer string per question ("" = no answer); references: the list of
# gold answer strings per question ([] = unanswerable, SQuAD 2.0). Max over gold answers,
# averaged over questions, as fractions (the official script prints 100x these).


def squad_normalize(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE)
    return " ".join(text.split())


_PUNCT = frozenset(string.punctuation)


def _squad_golds(golds: Sequence[str]) -> list[str]:
    # as the official script: answers that normalize to "" do not count; none left -> [""]
    return [g for g in golds if squad_normalize(g)] or [""]


def squad_exact(prediction: str, gold: str) -> int:
    return int(squad_normalize(gold) == squad_normalize(prediction))


def squad_token_f1(prediction: str, gold: str) -> float:
    gold_toks, pred_toks = squad_normalize(gold).split(), squad_normalize(prediction).split()
    if not gold_toks or not pred_toks:  # a no-answer on either side: right iff both are empty
        return float(gold_toks == pred_toks)
    return _overlap_f1(pred_toks, gold_toks)


def _overlap_f1(pred_toks: list[str], gold_toks: list[str]) -> float:
    """F1 of the multiset overlap of two token lists; 0 when they share no token."""
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


@METRICS.register("squad_em")
def squad_em(predictions: Sequence[str], references: Sequence[Sequence[str]], groups=None) -> float:
    scores = [max(squad_exact(p, g) for g in _squad_golds(r)) for p, r in zip(predictions, references)]
    return float(np.mean(scores)) if scores else 0.0


@METRICS.register("squad_f1")
def squad_f1(predictions: Sequence[str], references: Sequence[Sequence[str]], groups=None) -> float:
    scores = [max(squad_token_f1(p, g) for g in _squad_golds(r)) for p, r in zip(predictions, references)]
    return float(np.mean(scores)) if scores else 0.0


# ---------------------------------------------------------------- ReCoRD (official evaluate script)
# predictions: the predicted entity string per query; references: the list of gold answer
# strings per query. SQuAD v1.1 normalisation; EM and token F1 are each the max over the
# gold answers, averaged over queries (as fractions). Unlike SQuAD 2.0 there is no
# no-answer case: a gold answer that normalises to "" still counts, and token F1 is 0
# whenever prediction and gold share no token. Every query must have a gold answer.


def _record_golds(golds: Sequence[str], metric: str) -> Sequence[str]:
    if not golds:
        raise ValueError(f"ReCoRD {metric!r} needs at least one gold answer per query; got a query with none (unlabelled data?)")
    return golds


def record_token_f1(prediction: str, gold: str) -> float:
    """Token F1 of the official ReCoRD script: 0 when no normalised token is shared."""
    return _overlap_f1(squad_normalize(prediction).split(), squad_normalize(gold).split())


@METRICS.register("record_em")
def record_em(predictions: Sequence[str], references: Sequence[Sequence[str]], groups=None) -> float:
    scores = [max(squad_exact(p, g) for g in _record_golds(r, "record_em")) for p, r in zip(predictions, references)]
    return float(np.mean(scores)) if scores else 0.0


@METRICS.register("record_f1")
def record_f1(predictions: Sequence[str], references: Sequence[Sequence[str]], groups=None) -> float:
    scores = [max(record_token_f1(p, g) for g in _record_golds(r, "record_f1")) for p, r in zip(predictions, references)]
    return float(np.mean(scores)) if scores else 0.0
