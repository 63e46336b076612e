r"""LaTeX: one ``\input``-able fragment per table (a ``table`` float with caption and label;
needs ``booktabs``) and ``results.tex``, a standalone document (lmodern, T1 fonts, booktabs)
that inputs them. No ``\resizebox``: tables keep the document's font size (``\small``)."""

from __future__ import annotations

import re
from typing import Optional

from orchestrator.common.labels import method_label, task_labels
from orchestrator.report.build import Report
from orchestrator.report.regimes import regimes_caption, regimes_table
from orchestrator.report.tables import (
    FAILURES_HEADING, TEX, data_caption, data_notes, data_table, figure_caption, main_caption, main_table, method_notes,
    pretraining_notes, protocol_text, provenance_text, search_caption, search_table, contrasts_caption, contrasts_table,
    findings, tex_escape,
)  # fmt: skip

FRAGMENTS = ("results_data.tex", "results_main.tex", "results_regimes.tex", "results_contrasts.tex", "results_search.tex")


def _bold_md(text: str) -> str:
    """Escape for LaTeX, with markdown's **bold** as \\textbf."""
    parts = text.split("**")
    return "".join(rf"\textbf{{{tex_escape(p)}}}" if i % 2 else tex_escape(p) for i, p in enumerate(parts))


def _label(rep: Report, what: str) -> str:
    return f"tab:{re.sub(r'[^A-Za-z0-9]+', '-', rep.name).strip('-') or 'study'}:{what}"


def _head(cell: str) -> str:
    """A long header on two lines (keeps numeric columns narrow without shrinking the font)."""
    if len(cell) <= 9 or " " not in cell:
        return cell
    first, rest = cell.split(" ", 1)
    if "$" in first or "\\" in first:  # never split inside math or a command
        return cell
    return rf"\begin{{tabular}}[b]{{@{{}}c@{{}}}}{first}\\{rest}\end{{tabular}}"


def _stack(cell: str, at: str) -> str:
    """A cell on two lines, broken before ``at`` (the second line starts with it)."""
    if at not in cell:
        return cell
    first, rest = cell.split(at, 1)
    second = f"{at.strip()} {rest}".rstrip()
    return rf"\begin{{tabular}}[t]{{@{{}}l@{{}}}}{first}\\{second}\end{{tabular}}"


def _table(rep: Report, what: str, caption: str, colspec: str, header: list[str], blocks: list[tuple[Optional[str], list[list[str]]]],
           ncol: int, after: Optional[list[str]] = None) -> str:
    lines = [
        f"% {what} table of study {rep.name}: \\input this file (needs \\usepackage{{booktabs}})",
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{3.5pt}",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{{_label(rep, what)}}}",
        rf"\begin{{tabular}}{{{colspec}}}",
        r"\toprule",
        " & ".join(_head(h) for h in header) + r" \\",
    ]
    for heading, rows in blocks:
        lines.append(r"\midrule")
        if heading is not None:
            lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\textit{{{heading}}}}} \\")
        lines += [" & ".join(r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if after:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"] + after + [r"\end{minipage}"]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def _grouped(body: list[list[str]]) -> list[tuple[Optional[str], list[list[str]]]]:
    """Rows whose first column is the backbone -> one block per backbone (the heading)."""
    blocks: list[tuple[Optional[str], list[list[str]]]] = []
    for line in body:
        if not blocks or blocks[-1][0] != line[0]:
            blocks.append((line[0], []))
        blocks[-1][1].append(line[1:])
    return blocks


_CONFIG = re.compile(r" \[([^\]]+)\]")


def _config_keys(sections: list[tuple[str, list[list[str]]]]) -> tuple[list[tuple[str, list[list[str]]]], list[str]]:
    """The main table's per-cell configuration ``[prompt length=8, depth=2]`` as a superscript letter, with
    one key line per distinct configuration under the table: written in the cell, it made the table wider
    than the page."""
    letters: dict[str, str] = {}

    def mark(m: re.Match) -> str:
        key = letters.setdefault(m.group(1), _letter(len(letters)))
        return rf"\textsuperscript{{{key}}}"

    out = [(heading, [[_CONFIG.sub(mark, cell) for cell in row] for row in rows]) for heading, rows in sections]
    return out, [rf"\textsuperscript{{{k}}} {config}\\" for config, k in letters.items()]


def _letter(i: int) -> str:
    """a, b, …, z, aa, ab, …"""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


def render_fragments(rep: Report) -> dict[str, str]:
    """``{file name: LaTeX}`` of every table the report has."""
    out: dict[str, str] = {}
    notes = [tex_escape(n) + r"\\" for n in pretraining_notes(rep)]
    if rep.data:
        header, body = data_table(rep, TEX)
        dnotes = [tex_escape(n) + r"\\" for n in data_notes(rep)]
        out["results_data.tex"] = _table(rep, "data", data_caption(rep), "l" + "r" * (len(header) - 1), header,
                                         [(None, body)], len(header), after=(dnotes + notes) or None)
    header, sections = main_table(rep, TEX)
    ncol = len(header) - 1  # the backbone is a group heading spanning the table, not a column
    sections, key = _config_keys(sections)
    sections = [(h, [[_stack(c, " (by task)") for c in r] for r in rows]) for h, rows in sections]
    after = key + (notes if not rep.data else [])
    out["results_main.tex"] = _table(rep, "main", main_caption(rep, config_mark="Superscript letters (key below)"),
                                     "l" + "r" * (ncol - 1), header[1:], sections, ncol, after=after or None)
    if rep.regimes is not None:
        label = lambda t: rep.task_labels.get(t) or task_labels([t])[t]  # noqa: E731
        header, body = regimes_table(rep.regimes, label, method_label, pm=r" $\pm$ ")
        blocks: list[tuple[Optional[str], list[list[str]]]] = []
        for row in body:  # a task's first line names it: one block per task
            if row[0]:
                blocks.append((tex_escape(row[0]), []))
            blocks[-1][1].append([c if "$" in c else tex_escape(c) for c in row[1:]])
        out["results_regimes.tex"] = _table(rep, "regimes", regimes_caption(rep.regimes, label), "l" + "r" * (len(header) - 2),
                                            [tex_escape(h) for h in header[1:]], blocks, len(header) - 1)
    if rep.contrasts:
        header, body = contrasts_table(rep, TEX)
        if len(header) == 11:  # several regimes: the regime joins the backbone in the group heading
            header, body = header[1:], [[f"{r[0]} --- {r[1]}"] + r[2:] for r in body]
        blocks = [(h, [[_stack(c, " vs ") if i == 1 else c for i, c in enumerate(r)] for r in rows])
                  for h, rows in _grouped(body)]  # "A vs B" on two lines: the table fits the page
        out["results_contrasts.tex"] = _table(rep, "contrasts", contrasts_caption(rep), r"llrrlrrrp{0.16\linewidth}",
                                              header[1:], blocks, len(header) - 1)
    if rep.search:
        header, body = search_table(rep, TEX)
        n_counts = len(header) - 6
        spec = "ll" + "r" * n_counts + "lr" + r"p{0.2\linewidth}"
        out["results_search.tex"] = _table(rep, "search", search_caption(rep), spec, header[1:], _grouped(body),
                                           len(header) - 1)
    return out


def render_latex(rep: Report, fragments: dict[str, str], figure: Optional[str] = "scale.pdf") -> str:
    """The standalone wrapper: ``\\input``s each fragment (written beside it)."""
    wide = len(rep.tasks) >= 4  # the main table has 6 columns besides the tasks
    lines = [
        r"\documentclass{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage{lmodern}",
        r"\usepackage[margin=2cm" + (",landscape" if wide else "") + "]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\begin{document}",
        r"\sloppy",
        "",
        rf"\section*{{Results: {tex_escape(rep.name)}}}",
        "",
        tex_escape(protocol_text(rep)),
        "",
    ]
    for name in ("results_data.tex", "results_main.tex"):
        if name in fragments:
            lines.append(rf"\input{{{name[:-4]}}}")
    lines.append("")
    if rep.notes:
        lines += [r"\noindent Missing or incomplete cells:", r"\begin{itemize}"]
        lines += [rf"\item {tex_escape(n)}" for n in rep.notes]
        lines += [r"\end{itemize}", ""]
    if rep.failures:
        lines += [r"\noindent " + tex_escape(FAILURES_HEADING), r"\begin{itemize}"]
        lines += [rf"\item {tex_escape(n)}" for n in rep.failures]
        lines += [r"\end{itemize}", ""]
    if rep.stat_notes:
        lines += [r"\noindent Not tested or not used by the statistics:", r"\begin{itemize}"]
        lines += [rf"\item {tex_escape(n)}" for n in rep.stat_notes]
        lines += [r"\end{itemize}", ""]
    if "results_regimes.tex" in fragments:
        lines += [r"\input{results_regimes}", ""]
    if "results_contrasts.tex" in fragments:
        lines += [r"\input{results_contrasts}", ""]
        lines += [r"\subsection*{Findings}", r"\noindent Written from the ledger by orchestrate report: each verdict, "
                  r"effect and p-value below is computed, none is hand-written.", r"\begin{itemize}"]
        lines += [rf"\item {_bold_md(x)}" for x in findings(rep)]
        lines += [r"\end{itemize}", ""]
    if figure:
        lines += [
            rf"\IfFileExists{{{figure}}}{{",
            r"\begin{figure}[htbp]",
            r"\centering",
            rf"\includegraphics[width=\linewidth]{{{figure}}}",
            rf"\caption{{{tex_escape(figure_caption(rep))}}}",
            r"\end{figure}",
            r"}{}",
            "",
        ]
    if "results_search.tex" in fragments:
        lines += [r"\input{results_search}", ""]
    notes = method_notes(rep)
    if notes:
        lines += [r"\subsection*{Method notes}", r"\begin{itemize}"]
        for label, items in notes:
            lines += [rf"\item \textbf{{{tex_escape(label)}}}", r"\begin{itemize}"] + [rf"\item {tex_escape(x)}" for x in items]
            lines.append(r"\end{itemize}")
        lines += [r"\end{itemize}", ""]
    lines += [r"\noindent\footnotesize " + tex_escape(provenance_text(rep).replace("`", "")), "", r"\end{document}", ""]
    return "\n".join(lines)
