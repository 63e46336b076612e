"""``results.md``: the report as GitHub markdown (pipe tables)."""

from __future__ import annotations

from orchestrator.report.build import Report
from orchestrator.common.labels import method_label, task_labels
from orchestrator.report.regimes import regimes_caption, regimes_table
from orchestrator.report.tables import (
    FAILURES_HEADING, MD, data_caption, data_notes, data_table, figure_caption, main_caption, main_table, method_notes,
    pretraining_notes, protocol_text,
    provenance_text, search_caption, search_table, contrasts_caption, contrasts_table, findings,
)  # fmt: skip


def _pipe(header: list[str], body: list[list[str]], align: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(body, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True)


def task_label_of(rep: Report, t: str) -> str:
    return rep.task_labels.get(t) or task_labels([t])[t]


def render_markdown(rep: Report) -> str:
    out = [f"# Results: {rep.name}", "", protocol_text(rep), ""]
    if rep.main_regime is not None:
        out += [f"Regimes: the data, main-results, scale and search sections show the **{rep.main_regime}** "
                f"regime; the Regimes section sets every regime side by side, and the Contrasts and Findings cover every "
                f"regime.", ""]
    n = 0

    out += ["## Data", ""]
    if rep.data:
        n += 1
        header, body = data_table(rep, MD)
        out += [f"**Table {n}.** {data_caption(rep)}", "", _pipe(header, body, ["left"] + ["right"] * (len(header) - 1)), ""]
        notes = data_notes(rep)
        if notes:
            out += ["Data notes:", ""] + [f"- {x}" for x in notes] + [""]
    else:
        out += ["Not recorded: this ledger has no `data_json` column (written by newer runners).", ""]
    out += [f"- {line}" for line in pretraining_notes(rep)] + ([""] if rep.pretraining else [])

    n += 1
    header, sections = main_table(rep, MD)
    body = [[heading if i == 0 else ""] + line for heading, lines in sections for i, line in enumerate(lines)]
    out += ["## Main results", "", f"**Table {n}.** {main_caption(rep)}", "",
            _pipe(header, body, ["left", "left"] + ["right"] * (len(header) - 2))]
    if rep.notes:
        out += ["", "Missing or incomplete cells:", ""] + [f"- {x}" for x in rep.notes]
    if rep.failures:
        out += ["", FAILURES_HEADING, ""] + [f"- {x}" for x in rep.failures]
    if rep.stat_notes:
        out += ["", "Not tested or not used by the statistics:", ""] + [f"- {x}" for x in rep.stat_notes]

    if rep.regimes is not None:
        n += 1
        header, body = regimes_table(rep.regimes, lambda t: task_label_of(rep, t), method_label)
        out += ["", "## Regimes", "", f"**Table {n}.** {regimes_caption(rep.regimes, lambda t: task_label_of(rep, t))}", "",
                _pipe(header, body, ["left", "left"] + ["right"] * (len(header) - 2))]

    if rep.contrasts:
        n += 1
        header, body = contrasts_table(rep, MD)
        out += ["", "## Contrasts", "", f"**Table {n}.** {contrasts_caption(rep)}", "",
                _pipe(header, body, ["left"] * (len(header) - 7) + ["right", "right", "left", "right", "right", "right", "left"])]
        out += ["", "## Findings", "", "Written from the ledger by `orchestrate report`: each verdict, effect and p-value "
                "below is computed, none is hand-written.", ""] + [f"- {x}" for x in findings(rep)]

    out += ["", "## Scale", "", "![Primary metric vs backbone parameters](scale.png)", "",
            f"**Figure 1.** {figure_caption(rep)}", "", "## Hyperparameter search", ""]
    if rep.search:
        n += 1
        header, body = search_table(rep, MD)
        out += [f"**Table {n}.** {search_caption(rep)}", "",
                _pipe(header, body, ["left"] * 3 + ["right"] * (len(header) - 6) + ["left", "right", "left"])]
    else:
        out.append("No search trials recorded.")
    notes = method_notes(rep)
    if notes:
        out += ["", "## Method notes", "", "How each method departs from its paper (README \"Departures from the papers\"):", ""]
        for label, lines in notes:
            out += [f"- **{label}**"] + [f"  - {x}" for x in lines]
    out += ["", "---", "", provenance_text(rep), ""]
    return "\n".join(out)
