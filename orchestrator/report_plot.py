"""The scale figure of ``orchestrate report``: metric vs backbone size, one line per method.

Like P-Tuning v2's Figure 1: one panel per task plus the average, x = backbone total
parameters (log scale), y = primary metric x100 (mean over seeds), error bars = standard
deviation over seeds. Drawn with the Agg canvas directly (no pyplot global state).
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .report import Report

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _style(method: str, index: int) -> tuple[str, str]:
    """A method keeps its colour and marker across studies (fine-tuning is always blue)."""
    from .report import METHOD_ORDER

    k = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + index
    return COLORS[k % len(COLORS)], MARKERS[k % len(MARKERS)]


def _series(rep: "Report", method: str, task: Optional[str]) -> tuple[list[float], list[float], list[float]]:
    xs, ys, es = [], [], []
    for g in rep.groups:
        if g.params is None:
            continue
        row = next((r for r in rep.rows if r.group is g and r.method == method), None)
        if row is None:
            continue
        if task is None:
            mean, std = row.avg_mean, row.avg.std
        else:
            mean, std = row.cells[task].mean, row.cells[task].std
        if mean is None:
            continue
        xs.append(float(g.params))
        ys.append(mean)
        es.append(std if std is not None else 0.0)
    return xs, ys, es


def plot_scale(rep: "Report") -> dict[str, bytes]:
    """``{"png": bytes, "pdf": bytes}`` of the scale figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from .report import human_count, method_label, metric_label

    panels: list[tuple[Optional[str], str]] = [
        (t, f"{rep.task_labels[t]} ({metric_label(rep.task_metric[t])}, {rep.task_split[t]})") for t in rep.tasks
    ]
    panels.append((None, "Average over tasks"))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    all_x = sorted({float(g.params) for g in rep.groups if g.params is not None})
    handles = {}
    for i, (task, title) in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for j, m in enumerate(rep.methods):
            xs, ys, es = _series(rep, m, task)
            if not xs:
                continue
            dodge = 1.025 ** (j - (len(rep.methods) - 1) / 2)  # keep error bars at one size apart
            color, marker = _style(m, j)
            h = ax.errorbar(
                [x * dodge for x in xs], ys, yerr=es, label=method_label(m), color=color, marker=marker,
                linestyle="--" if m == "finetune" else "-", capsize=3, linewidth=1.6, markersize=5,
            )
            handles.setdefault(method_label(m), h)
        ax.set_xscale("log")
        if all_x:
            lo, hi = all_x[0], all_x[-1]
            ax.set_xlim(lo / 1.6, hi * 1.6)
            ax.set_xticks(all_x)
            ax.xaxis.set_minor_locator(LogLocator(subs="all"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_count(v)))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("backbone parameters", fontsize=9)
        ax.set_ylabel("score ×100", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8)
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)),
                   frameon=False, fontsize=9)
    spread = "single seed" if rep.single_seed else "mean ± std over seeds"
    fig.suptitle(f"{rep.name}: primary metric vs backbone size ({spread})", fontsize=11)
    height = 3.4 * nrows + 0.6
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    out = {}
    for ext, meta in (("png", {"Software": None}), ("pdf", {"Creator": None, "Producer": None, "CreationDate": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=meta)
        out[ext] = buf.getvalue()
    return out
