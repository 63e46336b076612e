"""Every name, colour, mark and number format a report prints, from one place: a method's
label, colour, marker and order from its registration (:mod:`ptcore.methods`), the rest
here. So a method has the same label and colour in every table and plot of every study, and
a hyperparameter the same readable name everywhere (``τ0=1.32``, not ``tau0=1.31732``)."""

from __future__ import annotations

import json
import math
import zlib
from typing import Any, Iterable, Mapping, Optional, Sequence

from ptcore.methods import METHODS, display_order
from ptcore.tasks import TASKS
from ptcore.tasks.kinds import kind_registry

MISSING = "–"  # en dash: no value (markdown); LaTeX writes "--"

# marks after a cell value (markdown text; LaTeX writes each as a superscript, see latex.py)
NOISE_MARK = "°"  # its 95% bootstrap interval includes the majority-class score
PRETRAIN_MARK = "§"  # on a task name: the backbone saw this task's data in pre-training

# ------------------------------------------------------------------ methods

BASELINE = "finetune"
# methods the registry does not know (a ledger from another version) or labelled variants:
# a colour chosen by a hash of the name, so the same name gets the same colour in every
# report (not by its position in one study)
EXTRA_COLORS = ("#D55E00", "#56B4E9", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#F0E442")
EXTRA_MARKERS = ("v", "P", "X", "*", "h", "<", ">", "p")
REFERENCE_STYLES = {  # the per-task reference lines of the plots
    "chance": {"color": "#555555", "linestyle": (0, (4, 3)), "linewidth": 1.0},
    "majority": {"color": "#555555", "linestyle": (0, (1, 2)), "linewidth": 1.2},
}


# A method's label, colour, marker and place in the order are what it registers
# (ptcore/methods/<name>/__init__.py); a name the registry lacks keeps its own name, a hashed
# style, and a place after the registered methods.


def method_label(m: str) -> str:
    return METHODS.get(m).label if m in METHODS else m


def method_key(m: str) -> tuple:
    order = display_order()
    return (order.index(m), "") if m in order else (len(order), m)


def method_style(m: str) -> tuple[str, str]:
    """(colour, marker) of a method: what it registers, a stable hash of the name for the rest."""
    method = METHODS.get(m) if m in METHODS else None
    h = zlib.crc32(m.encode())
    color = EXTRA_COLORS[h % len(EXTRA_COLORS)]
    marker = EXTRA_MARKERS[(h // len(EXTRA_COLORS)) % len(EXTRA_MARKERS)]
    if method is None:
        return color, marker
    return method.color or color, method.marker or marker


def __getattr__(name: str):
    """``METHOD_ORDER`` (and the label and style tables) as the registry holds them now."""
    if name == "METHOD_ORDER":
        return display_order()
    if name == "METHOD_LABELS":
        return {m: method_label(m) for m in display_order()}
    if name == "METHOD_STYLES":
        return {m: method_style(m) for m in display_order()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ metrics and tasks

METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "f1": "F1",
    "f1a": "F1a",
    "em": "EM",
    "mcc": "MCC",
    "pearson": "Pearson r",
    "spearman": "Spearman ρ",
    "entity_f1": "entity F1",
    "entity_precision": "entity precision",
    "entity_recall": "entity recall",
    "squad_f1": "F1",
    "squad_em": "EM",
    "record_f1": "F1",
    "record_em": "EM",
}

# display names where the data directory's name is not the usual one
TASK_LABELS = {
    "ner/wnut17": "WNUT-17",
    "ner/conll2003": "CoNLL-2003",
    "ner/conll2004": "CoNLL-2004",
    "ner/ontonotes": "OntoNotes",
    "qa/squad": "SQuAD",
    "qa/squad_v2": "SQuAD 2.0",
    "squad/v1.1": "SQuAD",
    "squad": "SQuAD",
}



def has_label_set(kind: Optional[str]) -> bool:
    """Whether a task kind's predictions are labels from a fixed set, so that a majority class
    and chance exist: the kind says (``Kind.has_label_set``, ptcore.tasks.kinds); a kind this
    checkout does not know has none."""
    kinds = kind_registry()
    return kind in kinds and kinds.get(kind).has_label_set


def metric_label(m: Optional[str]) -> str:
    return METRIC_LABELS.get(m, m) if m else "primary metric"


def task_spec(task: str):
    """The registered task (ptcore.tasks), or None for a task this checkout does not know."""
    try:
        return TASKS.get(task) if task in TASKS else None
    except Exception:  # noqa: BLE001 - a label is cosmetic; never fail the report on it
        return None


def task_labels(tasks: Sequence[str]) -> dict[str, str]:
    labels = {}
    for t in tasks:
        spec = task_spec(t)
        if t in TASK_LABELS:
            labels[t] = TASK_LABELS[t]
        elif spec is not None:
            labels[t] = spec.local.path.rstrip("/").split("/")[-1]
        else:
            labels[t] = t.split("/")[-1]
    counts: dict[str, int] = {}
    for v in labels.values():
        counts[v] = counts.get(v, 0) + 1
    for t, v in list(labels.items()):
        if counts[v] > 1:  # glue/rte vs superglue/rte
            labels[t] = f"{t.split('/')[0]}/{v}" if "/" in t else t
    return labels


def backbone_short(backbone: str) -> str:
    """``sentence-transformers/all-MiniLM-L6-v2`` -> ``MiniLM-L6-v2``; a study label stays."""
    base = backbone.rstrip("/").split("/")[-1] or backbone
    return base[4:] if base.startswith("all-") else base


# ------------------------------------------------------------------ hyperparameters

# readable names of searched settings; keys are spelled as in a study file (ptcore.config.flat_settings)
HPARAM_LABELS = {
    "lr": "lr",
    "learning_rate": "lr",
    "tau0": "τ0",
    "tau_min": "τ min",
    "prompt_length": "prompt length",
    "depth": "depth",
    "pool_size": "pool size",
    "position": "position",
    "batch_size": "batch size",
    "weight_decay": "weight decay",
    "warmup_ratio": "warmup",
    "dropout": "dropout",
    "epochs": "epochs",
    "reparameterize": "reparameterization",
    "reparam_hidden": "reparam. hidden",
    "max_length": "max length",
    "pooling": "pooling",
    "base": "base",
}
HPARAM_ORDER = ("lr", "learning_rate", "prompt_length", "depth", "tau0")
# how a None reads for a setting where None means something
HPARAM_NONE = {"depth": "all layers"}


def hparam_name(key: str) -> str:
    short = key.split(".")[-1]  # method.lr (an option named like a run setting) -> lr
    return HPARAM_LABELS.get(short, short.replace("_", " "))


def fmt_sig(v: float, digits: int = 3) -> str:
    """``digits`` significant digits; small and large numbers as ``3e-4`` / ``1.05e-4``."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if 1e-2 <= abs(v) < 1e5:
        s = f"{v:.{digits}g}"
        return s if "e" not in s else _exp(v, digits)
    return _exp(v, digits)


def _exp(v: float, digits: int) -> str:
    mant, exp = f"{v:.{digits - 1}e}".split("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def hparam_value(key: str, v: Any) -> str:
    short = key.split(".")[-1]
    if v is None:
        return HPARAM_NONE.get(short, "none")
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) >= 1 else fmt_sig(v)
    if isinstance(v, (int, str)):
        return str(v)
    return json.dumps(v, sort_keys=True)


def hparam_sort_key(key: str) -> tuple:
    short = key.split(".")[-1]
    return (HPARAM_ORDER.index(short), "") if short in HPARAM_ORDER else (len(HPARAM_ORDER), hparam_name(key))


def readable_params(params: Mapping[str, Any]) -> str:
    """``{"lr": 3e-4, "tau0": 1.31732}`` -> ``lr=3e-4, τ0=1.32``."""
    keys = sorted(params, key=hparam_sort_key)
    return ", ".join(f"{hparam_name(k)}={hparam_value(k, params[k])}" for k in keys)


# ------------------------------------------------------------------ numbers


def human_count(n: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    for div, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f} B"


def fmt_score(v: float) -> str:
    """A score ×100 (a percentage): one decimal, everywhere."""
    return f"{v:.1f}"


def fmt_seconds(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_p(p: Optional[float]) -> str:
    """A p-value as computed (analytic t: no resampling floor): 3 decimals, or 2 significant
    digits below 0.001 (``1.1e-4``), never "<0.001"."""
    if p is None:
        return MISSING
    if p >= 0.001:
        return f"{p:.3f}"
    return f"{p:.1e}".replace("e-0", "e-")


def span(values: Iterable[Any], fmt=lambda v: f"{v:,}" if isinstance(v, int) else str(v)) -> str:
    """Values as one cell: ``a`` where all agree, ``lo–hi`` for numbers that differ, else a list; "" for none."""
    vals = sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v))
    if not vals:
        return ""
    if len(vals) == 1:
        return fmt(vals[0])
    if all(isinstance(v, (int, float)) for v in vals):
        return f"{fmt(vals[0])}–{fmt(vals[-1])}"
    return ", ".join(fmt(v) for v in vals)
