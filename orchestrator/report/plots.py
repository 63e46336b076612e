"""The scale figure: metric vs backbone size, one line per method (colour and marker from
:mod:`.labels`, the same in every report).

One panel per task that has data, plus the average over tasks when there are several; x =
backbone total parameters (log scale), or the layers kept where every backbone is the first k
layers of one model (a truncation ladder is not a ladder of pretrained sizes), y = primary metric ×100 (mean over seeds) with error
bars of one standard deviation; a dashed chance line and a dotted majority-class line per task.
Each y-axis is fitted to what its panel shows (error bars and reference lines included). PDFs
embed TrueType (Type 42) fonts, never Type 3. Drawn on the Agg canvas (no pyplot state).
"""

from __future__ import annotations

import io
import math
from typing import Optional

from orchestrator.report.build import Report
from orchestrator.common.labels import REFERENCE_STYLES, backbone_short, human_count, method_label, method_style, metric_label
from orchestrator.report.stats import mean

# svg.hashsalt: fixed ids in an SVG (an SVG is not written today; set for whoever adds one)
RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "ptcore-report"}
# no timestamp or software version in a figure: the same report gives the same bytes
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}


def ladder(rep: Report) -> Optional[str]:
    """The model whose first k layers every group keeps (a truncation ladder), else None: the
    x axis is then layers, not parameters (a truncated model is not a smaller pretrained one,
    and its embedding matrix, the same at every depth, would dominate a parameter axis)."""
    models = {g.model for g in rep.groups}
    if len(rep.groups) > 1 and len(models) == 1 and all(g.truncated for g in rep.groups):
        return next(iter(models))
    return None


def _x(rep: Report, g) -> Optional[float]:
    if ladder(rep) is not None:
        return None if g.layers is None else float(g.layers)
    return None if g.params is None else float(g.params)


def _series(rep: Report, method: str, task: Optional[str]) -> tuple[list[float], list[float], list[float]]:
    xs, ys, es = [], [], []
    for g in rep.groups:
        if _x(rep, g) is None:
            continue
        row = next((r for r in rep.rows if r.group is g and r.method == method), None)
        if row is None:
            continue
        if task is None:
            m, s = row.avg_mean, row.avg.std
        else:
            m, s = row.cells[task].mean, row.cells[task].std
        if m is None:
            continue
        xs.append(_x(rep, g))
        ys.append(m)
        es.append(s if s is not None else 0.0)
    return xs, ys, es


def _reference(rep: Report, values: dict[str, Optional[float]], task: Optional[str]) -> Optional[float]:
    if task is not None:
        return values.get(task)
    vals = [values.get(t) for t in rep.tasks]
    return mean(vals) if vals and all(v is not None for v in vals) else None


def panels(rep: Report) -> list[tuple[Optional[str], str]]:
    """(task or None for the average, title) of every panel with something to draw."""
    out: list[tuple[Optional[str], str]] = []
    for t in rep.tasks:
        if any(_series(rep, m, t)[0] for m in rep.methods):
            out.append((t, f"{rep.task_labels[t]} ({metric_label(rep.task_metric[t])}, {rep.task_split[t]})"))
    if len(out) > 1 and any(_series(rep, m, None)[0] for m in rep.methods):
        out.append((None, "Average over tasks"))
    return out


def _ylim(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = max(0.08 * (hi - lo), 0.5)
    return lo - pad, hi + pad


def plot_scale(rep: Report) -> dict[str, bytes]:
    """``{"png": bytes, "pdf": bytes}`` of the scale figure: matplotlib's own defaults plus
    :data:`RC` (a user's matplotlibrc or style does not reach it), :data:`METADATA`."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # undone when the context ends
        matplotlib.rcParams.update(RC)
        fig = make_figure(rep)
        out = {}
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, metadata=METADATA[ext])
            out[ext] = buf.getvalue()
    return out


def make_figure(rep: Report):
    """The scale figure (a matplotlib Figure on the Agg canvas); axes in :func:`panels` order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    shown = panels(rep)
    n = max(1, len(shown))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    height = 3.4 * nrows + 0.8
    fig = Figure(figsize=(4.2 * ncols, height), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    all_x = sorted({_x(rep, g) for g in rep.groups if _x(rep, g) is not None})
    by_layers = ladder(rep)
    handles: dict[str, object] = {}
    for i, (task, title) in enumerate(shown):
        ax = axes[i // ncols][i % ncols]
        yvals: list[float] = []
        for j, m in enumerate(rep.methods):
            xs, ys, es = _series(rep, m, task)
            if not xs:
                continue
            off = j - (len(rep.methods) - 1) / 2  # keep error bars apart
            color, marker = method_style(m)
            h = ax.errorbar([x + 0.06 * off if by_layers else x * 1.025 ** off for x in xs], ys, yerr=es, label=method_label(m), color=color, marker=marker,
                            linestyle="-", capsize=3, linewidth=1.6, markersize=5)
            handles.setdefault(method_label(m), h)
            yvals += [y - e for y, e in zip(ys, es)] + [y + e for y, e in zip(ys, es)]
        for kind, values in (("chance", rep.chance), ("majority", rep.majority)):
            ref = _reference(rep, values, task)
            if ref is not None:
                ax.axhline(ref, zorder=0, **REFERENCE_STYLES[kind])
                yvals.append(ref)
                label = "chance (uniform labels)" if kind == "chance" else "majority class"
                handles.setdefault(label, Line2D([], [], **REFERENCE_STYLES[kind]))
        if yvals:
            ax.set_ylim(*_ylim(yvals))
        if by_layers:
            if all_x:
                ax.set_xlim(all_x[0] - 0.6, all_x[-1] + 0.6)
                ax.set_xticks(all_x)
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0f}"))
            ax.set_xlabel(f"layers kept of {backbone_short(by_layers)} (truncated)", fontsize=9)
        else:
            ax.set_xscale("log")
            if all_x:
                ax.set_xlim(all_x[0] / 1.6, all_x[-1] * 1.6)
                ax.set_xticks(all_x)
                ax.xaxis.set_minor_locator(LogLocator(subs="all"))
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_count(v)))
            ax.set_xlabel("backbone parameters", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("score ×100", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8)
    for k in range(len(shown), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if not shown:
        axes[0][0].set_visible(False)
        fig.text(0.5, 0.5, "no successful final run to plot", ha="center", va="center")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)),
                   frameon=False, fontsize=9)
    spread = "single seed" if rep.single_seed else "mean ± std over seeds"
    fig.suptitle(f"{rep.name}: primary metric vs backbone size ({spread})", fontsize=11)
    legend_rows = math.ceil(len(handles) / 4) if handles else 0
    fig.tight_layout(rect=(0, (0.15 + 0.3 * legend_rows) / height, 1, 1))
    return fig
