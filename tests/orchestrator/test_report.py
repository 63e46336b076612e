"""``orchestrate report``: tables, statistics and figures rendered from fixed ledgers.

Fixtures (``tests/fixtures/report/``), ledgers with the runner's statuses (ok / pruned / error):

- ``with_predictions``: the ledger as the runner writes it now (``data_json``, ``params_json``,
  ``source_trial``, ``predictions`` files): 2 backbones x 4 tasks (SST-2 with a subsampled val,
  CB, QQP seen in pre-training, MultiRC grouped by question) x 3 methods x 3 seeds, a failed
  final run and a run without predictions (``make_with_predictions.py`` writes it);
- ``scale_small``: an older ledger (no data_json, no predictions): 2 backbones x 3 methods x
  2 tasks x 3 seeds, with search rows and study.yaml; the report degrades, it does not guess;
- ``missing_cell``: a cell whose final runs all failed, a cell never run, a seed that failed,
  and an NER task reported on its test split;
- ``single_seed``: one seed, no search rows, no study.yaml.

Golden files live in ``tests/fixtures/report/expected/<study>/``; regenerate them with
``UPDATE_GOLDEN=1 python -m pytest tests/orchestrator/test_report.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import report
from orchestrator.report import Report, build_report, load_results, render, write_files, write_report
from orchestrator.report.tables import tex_escape
from ptcore.errors import PtcoreError

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "report"
EXPECTED = HERE / "expected"
STUDIES = ("with_predictions", "scale_small", "missing_cell", "single_seed")
PROVENANCE = {"versions": {"python": "3.12.0", "ptcore": "0.1.0", "torch": "2.13.0", "pandas": "3.0.0"}}
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
TEXT_FILES = ("results.md", "results.tex", "results_data.tex", "results_main.tex", "results_contrasts.tex", "results_search.tex")


@pytest.fixture(scope="module")
def built() -> dict[str, Report]:
    """Each fixture study loaded and computed once for the module (tests only read them)."""
    return {study: build_report(load_results(HERE / study), PROVENANCE) for study in STUDIES}


@pytest.fixture(scope="module")
def rendered(built, tmp_path_factory) -> dict[str, Path]:
    """Each fixture study's report files (write_report = load_results + build_report + write_files)."""
    root = tmp_path_factory.mktemp("reports")
    return {study: write_files(built[study], root / study) for study in STUDIES}


def md(rendered, study: str) -> str:
    return (rendered[study] / "results.md").read_text()


def table_rows(text: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The markdown pipe table whose first header cell is ``first_header``: header, rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and line.strip("| ").startswith(first_header))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip().strip("|").split("|")])
    return block[0], block[2:]


def row_of(rows: list[list[str]], *cells: str) -> list[str]:
    return next(r for r in rows if all(c in r for c in cells))


# ------------------------------------------------------------------ golden files and files written


@pytest.mark.parametrize("study", STUDIES)
def test_golden_text_files(study, rendered):
    out = rendered[study]
    written = sorted(p.name for p in out.iterdir() if p.name in TEXT_FILES)
    expected_dir = EXPECTED / study
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir(parents=True)
        for name in written:
            (expected_dir / name).write_text((out / name).read_text())
        return
    assert expected_dir.is_dir(), f"missing goldens {expected_dir}; run with UPDATE_GOLDEN=1 to create them"
    assert written == sorted(p.name for p in expected_dir.iterdir()), "the report writes other files than its goldens"
    for name in written:
        assert (out / name).read_text() == (expected_dir / name).read_text(), (
            f"{study}/{name} differs from its golden file (UPDATE_GOLDEN=1 regenerates it)")


@pytest.mark.parametrize("study", STUDIES)
def test_figures_written(study, rendered):
    out = rendered[study]
    png, pdf = (out / "scale.png").read_bytes(), (out / "scale.pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
    assert not list(out.glob(".*.tmp"))


def test_output_is_deterministic(rendered):
    """The same ledger gives the same bytes, figures included. (The text goldens, written by
    another process, check the bootstrap and chance draws of with_predictions the same way.)"""
    again = render(build_report(load_results(HERE / "single_seed"), PROVENANCE))
    assert set(again) >= {"results.md", "results.tex", "results_main.tex", "scale.png", "scale.pdf"}
    for name, blob in again.items():
        assert (rendered["single_seed"] / name).read_bytes() == blob, name


def test_tables_of_a_ledger_without_new_fields_are_left_out(rendered):
    """Older ledgers (no data_json, no predictions): no data table, no intervals, no references;
    the contrasts need only the ledger's per-seed scores, so they are tested."""
    out = rendered["scale_small"]
    assert not (out / "results_data.tex").exists() and (out / "results_contrasts.tex").exists()
    assert (out / "results_main.tex").is_file() and (out / "results_search.tex").is_file()
    text = md(rendered, "scale_small")
    assert "no `data_json` column" in text and "size not recorded" in text
    assert "95% interval reaches down" not in text  # no predictions: no interval, so no mark and no word of one
    assert "Majority class" not in text
    assert not any("†" in cell or "°" in cell for row in table_rows(text, "Backbone")[1] for cell in row)
    assert "whole official" not in text  # nothing recorded: claims nothing


# ------------------------------------------------------------------ what the report states


def test_data_budget_table(rendered):
    text = md(rendered, "with_predictions")
    header, rows = table_rows(text, "Task")
    assert header == ["Task", "Train", "Dev", "Val", "Max length", "Epochs", "Batch", "Truncated"]
    sst2 = row_of(rows, "SST-2")
    assert sst2[1:] == ["700 (subset)", "200 (of 6,735; carved)", "200 (of 872)", "128", "3", "16", "0"]
    cb = row_of(rows, "CB")
    assert cb[1:4] == ["225", "25 (carved)", "56"] and cb[7] == "train 3, val 1"
    assert row_of(rows, "MultiRC")[7] == "train 120, dev 20, val 31"
    assert "- SST-2: dev = 10% of the official train split (seed 20220527); train subsampled" in text


def test_protocol_states_what_ran(rendered):
    text = md(rendered, "with_predictions")
    protocol = text.split("\n\n")[1]
    assert "Table 1 gives, per task, the examples each run used" in protocol
    # SST-2's val was subsampled (a note says so): never "whole"; CB's was not
    assert "SST-2 accuracy on a 200-example subset of the official validation split (of 872)" in protocol
    assert "CB accuracy on the whole official validation split (56 examples)" in protocol
    assert "3 trials per cell, 24 cells (72 trials: 42 completed, 24 stopped early by ASHA" in protocol
    assert "6 failed" in protocol and "seeds 0, 1, 2; 3 epochs" in protocol
    assert "Baselines: fine-tuning on the same backbone; majority class and chance" in protocol


def test_majority_and_chance_rows(rendered):
    text = md(rendered, "with_predictions")
    header, rows = table_rows(text, "Backbone")
    assert header[2:6] == ["QQP§", "SST-2", "CB", "MultiRC"]
    majority, chance = row_of(rows, "Majority class"), row_of(rows, "Chance (uniform guessing)")
    # SST-2 val: 104 of 200 are the training majority label; CB: 23 of 56; F1 tasks: 0 for all-negative
    assert majority[2:6] == ["0.0", "52.0", "41.1", "0.0"]
    assert chance[4] == "33.3" and chance[3] == "50.0"  # accuracy: exactly 1/K
    assert "exactly 100/K for accuracy with K labels (SST-2, CB)" in text and "a Monte-Carlo estimate (QQP, MultiRC)" in text
    # within reach of the majority class: CB prompt tuning (its interval reaches 41.1); not fine-tuning
    cb = header.index("CB")
    pt = [r for r in rows if r[1] == "Prompt tuning"]
    assert all("°" in r[cb] for r in pt)
    assert not any("°" in r[cb] for r in rows if r[1] in ("Fine-tuning", "P-Tuning v2"))
    assert "°: the cell's 95% interval reaches down to the majority-class score or below" in text


def test_a_cell_below_the_majority_is_marked_and_never_bold():
    """The interval's lower end at or below the majority score marks the cell, even where the
    whole interval lies below it; such a cell is never bold, even when best in its column."""
    from orchestrator.report.build import Cell
    from orchestrator.report.tables import MD, _cell_text

    c = Cell(seeds={0: 49.3, 1: 48.9, 2: 49.7}, interval=(47.0, 51.5), near_majority=True)
    text = _cell_text(c, best=True, f=MD, n_seeds=3)
    assert "°" in text and "**" not in text
    assert "**" in _cell_text(Cell(seeds={0: 70.0, 1: 71.0}, interval=(60.0, 80.0)), best=True, f=MD, n_seeds=2)


def test_contrasts_are_tests_over_seeds_with_holm(rendered, built):
    """The default contrasts that apply (P-Tuning v2 vs fine-tuning, vs prompt tuning) on every
    task and backbone; Welch's t over the ledger's per-seed scores, checked against scipy's own
    Welch test; Holm over the family; verdicts and findings from those numbers."""
    from scipy import stats as st

    text = md(rendered, "with_predictions")
    assert "## Significance" not in text and "paired bootstrap over evaluation items" not in text
    header, rows = table_rows(text.split("## Contrasts")[1], "Backbone")
    assert header == ["Backbone", "Task", "Contrast", "Δ", "95% CI", "Test", "p", "p (Holm)", "TOST ±2 p (Holm)", "Verdict"]
    assert len(rows) == 16 and "Holm-corrected over the 16 tested contrasts" in text
    rep = built["with_predictions"]
    data = load_results(HERE / "with_predictions")
    for c in rep.contrasts:
        def scores(method):
            return [100 * r["val_primary"] for r in data.rows if r["phase"] == "final" and r["status"] == "ok"
                    and r["task"] == c.task and r["method"] == method and (r["backbone"], r["layers"]) == c.group_key]
        ref = st.ttest_ind(scores(c.a), scores(c.b), equal_var=False)
        assert c.test.p == pytest.approx(ref.pvalue, rel=1e-9), (c.task, c.a, c.b)
    holm = [c.p_holm for c in rep.contrasts]
    assert all(h >= c.test.p for h, c in zip(holm, rep.contrasts))
    sst2 = row_of(rows, "MiniLM-L6-v2, first 2 layers, 15.6M params", "SST-2", "P-Tuning v2 vs Prompt tuning")
    assert sst2[3] == "+12.7" and sst2[5] == "Welch t, 3+3" and sst2[-1] == "better"
    cb = row_of(rows, "MiniLM-L6-v2, first 6 layers, 22.7M params", "CB", "P-Tuning v2 vs Prompt tuning")
    assert cb[5] == "Welch t, 3+2"  # prompt tuning's seed 2 failed: 2 seeds
    findings = text.split("## Findings")[1]
    assert "16 contrasts: 5 better, 11 inconclusive" in findings
    assert "P-Tuning v2 vs Fine-tuning (SST-2, MiniLM-L6-v2, first 6 layers, 22.7M params): **inconclusive**" in findings
    assert "detects a difference of" in findings


def test_contrasts_follow_the_study_file(tmp_path):
    """report.contrasts and equivalence_margin from the study file: a pair named there, a margin
    wide enough to call a small difference equivalent."""
    import shutil as sh

    import yaml

    src = HERE / "with_predictions"
    dst = tmp_path / "with_predictions"
    sh.copytree(src, dst)
    cfg = yaml.safe_load((dst / "study.yaml").read_text()) if (dst / "study.yaml").is_file() else {"name": "x"}
    cfg["report"] = {"contrasts": [["ptuning_v2", "finetune"]], "equivalence_margin": 10.0}
    (dst / "study.yaml").write_text(yaml.safe_dump(cfg))
    rep = build_report(load_results(dst), PROVENANCE)
    assert {(c.a, c.b) for c in rep.contrasts} == {("ptuning_v2", "finetune")}
    verdicts = {(c.task, c.backbone): c.verdict for c in rep.contrasts}
    assert verdicts[("glue/sst2", "MiniLM-L6-v2, first 6 layers, 22.7M params")] == "equivalent"


def test_pretraining_overlap_is_flagged(rendered):
    text = md(rendered, "with_predictions")
    assert "§ QQP: MiniLM-L6-v2 was trained on Quora duplicate questions" in text
    assert "SST-2§" not in text and "CB§" not in text
    assert r"QQP\textsuperscript{\S}" in (rendered["with_predictions"] / "results_main.tex").read_text()


def test_search_summary_counts_statuses_and_reads_names(rendered):
    text = md(rendered, "with_predictions")
    header, rows = table_rows(text.split("## Hyperparameter search")[1], "Backbone")
    assert header[3:7] == ["Trials", "Completed", "Stopped early", "Failed"]
    qqp = row_of(rows, "MiniLM-L6-v2, first 2 layers, 15.6M params", "QQP§", "P-Tuning v2")
    assert qqp[3:7] == ["3", "1", "1", "1"]
    assert qqp[-1] == "lr=0.0106, prompt length=8, depth=2"
    assert row_of(rows, "MiniLM-L6-v2, first 6 layers, 22.7M params", "SST-2", "Fine-tuning")[-1] == "lr=2e-5"
    assert "method_args" not in text
    old = md(rendered, "scale_small")  # an older ledger: names from config_json, the same readable form
    assert "lr=0.03, prompt length=32" in old and "prompt_length" not in old
    _, rows = table_rows(old.split("## Hyperparameter search")[1], "Backbone")
    assert row_of(rows, "MiniLM-L6-v2, first 2 layers, 11.2M params", "CB", "Prompt tuning")[3:7] == ["3", "2", "1", "0"]


def test_main_table_of_an_older_ledger(rendered):
    text = md(rendered, "scale_small")
    header, rows = table_rows(text, "Backbone")
    assert header[:5] == ["Backbone", "Method", "CB", "RTE", "Avg"]
    assert header[5:] == ["Δ FT", "Trainable", "Ckpt/task", "Train (s)"]
    # backbones smallest first, fine-tuning first within each backbone
    assert rows[0][0] == "MiniLM-L6-v2, first 2 layers, 11.2M params" and rows[3][0] == "MiniLM-L6-v2, first 6 layers, 22.7M params"
    assert [r[1] for r in rows] == ["Fine-tuning", "Prompt tuning", "P-Tuning v2"] * 2
    assert rows[0][5] == "(ref.)" and rows[0][6] == "11.2M"
    assert "±" in rows[0][2] and rows[0][2].startswith("**")  # FT best on CB for the small backbone
    assert rows[1][5].startswith("-")
    assert "seeds 0, 1, 2" in text and "git commit 3f2c9a1b7d4e" in text and "torch 2.13.0" in text


def test_missing_and_failed_cells(rendered):
    text = md(rendered, "missing_cell")
    header, rows = table_rows(text, "Backbone")
    ptv2 = row_of(rows, "P-Tuning v2")
    assert ptv2[header.index("RTE")] == "–" and ptv2[header.index("Avg")] == "–"  # RTE failed on every seed
    assert row_of(rows, "Dynamic prompting")[header.index("CB")] == "–"  # CB never run
    assert "(n=2)" in text  # a failed seed
    assert "WNUT-17 entity F1 on the official test split" in text
    assert "no successful final run (3 failed)" in text and "(not run)" in text


def test_single_seed_has_no_spread_or_test(rendered):
    text = md(rendered, "single_seed")
    table = "\n".join(line for line in text.split("## Contrasts")[0].splitlines() if line.startswith("|"))
    assert "±" not in table and "†" not in table
    assert "not tested (1 seed: a test over seeds needs 2 per method)" in text
    assert "a single seed (no spread shown)" in text
    assert "No search trials recorded." in text and "Search: none recorded" in text


def test_scale_plot_panels_and_limits(built):
    """Only tasks with data get a panel; each y-axis holds its error bars and reference lines."""
    from orchestrator.report.plots import make_figure, panels

    rep = built["with_predictions"]
    fig = make_figure(rep)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [title for _, title in panels(rep)]
    assert len(axes) == 5  # 4 tasks + the average
    for ax, (task, _) in zip(axes, panels(rep)):
        lo, hi = ax.get_ylim()
        refs = [rep.chance.get(task), rep.majority.get(task)] if task else []
        for v in refs:
            assert lo < v < hi
        dashed = [line for line in ax.get_lines() if line.get_linestyle() not in ("-", "None")]
        assert len(dashed) == 2  # chance and majority
        for r in rep.rows:
            m, sd = (r.cells[task].mean, r.cells[task].std) if task else (r.avg_mean, r.avg.std)
            if m is not None:
                assert lo <= m - (sd or 0) and m + (sd or 0) <= hi
        assert hi - lo < 100  # fitted, not 0..100
    missing = built["missing_cell"]
    assert [t for t, _ in panels(missing)] == ["ner/wnut17", "superglue/cb", "superglue/rte", None]


# ------------------------------------------------------------------ LaTeX and PDF


def test_latex_is_fragments_and_a_wrapper(rendered):
    out = rendered["with_predictions"]
    wrapper = (out / "results.tex").read_text()
    for pkg in (r"\usepackage{lmodern}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}"):
        assert pkg in wrapper
    for name in ("results_data", "results_main", "results_contrasts", "results_search"):
        assert rf"\input{{{name}}}" in wrapper
        fragment = (out / f"{name}.tex").read_text()
        assert fragment.count(r"\begin{table}") == 1 and r"\documentclass" not in fragment and r"\label{" in fragment
    for study in STUDIES:
        for path in rendered[study].glob("*.tex"):
            text = path.read_text()
            assert r"\resizebox" not in text
            # one decimal for every score: no number with 2+ decimals outside p-values and sizes
            if path.name == "results_main.tex":
                body = text.split(r"\toprule")[1]
                assert not re.search(r"\d\.\d\d", body), path


def test_latex_compiles(rendered, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    kpse = shutil.which("kpsewhich")
    for sty in ("booktabs.sty", "lmodern.sty"):
        if kpse is None or not subprocess.run([kpse, sty], capture_output=True, text=True).stdout.strip():
            pytest.skip(f"{sty} not installed (apt-get install texlive-latex-recommended)")
    for study in STUDIES:
        out = tmp_path / study
        shutil.copytree(rendered[study], out)
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "results.tex"],
            cwd=out, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, f"{study}: pdflatex failed:\n{proc.stdout[-3000:]}"
        assert (out / "results.pdf").stat().st_size > 1000
        log = (out / "results.log").read_text(errors="replace")
        assert "Overfull \\hbox" not in log, f"{study}: a table is wider than the page"
        try:  # lmodern: Type 1 text fonts; the included plot: TrueType; never Type 3
            types = _pypdf_font_types(out / "results.pdf")
        except ImportError:
            continue
        assert "/Type1" in types and "/Type3" not in types, f"{study}: fonts of results.pdf: {types}"


def _pypdf_font_types(pdf: Path) -> set[str]:
    from pypdf import PdfReader

    types: set[str] = set()
    seen: set[int] = set()

    def walk(resources) -> None:
        if resources is None:
            return
        resources = resources.get_object()
        for font in (resources.get("/Font") or {}).values():
            font = font.get_object()
            types.add(str(font.get("/Subtype")))
            for desc in font.get("/DescendantFonts") or []:
                types.add(str(desc.get_object().get("/Subtype")))
        for xobj in (resources.get("/XObject") or {}).values():
            ref = getattr(xobj, "idnum", None)
            if ref is not None and ref in seen:
                continue
            seen.add(ref)
            walk(xobj.get_object().get("/Resources"))

    for page in PdfReader(str(pdf)).pages:
        walk(page.get("/Resources"))
    return types


def test_plot_pdf_embeds_no_type3_font(rendered):
    pytest.importorskip("pypdf", reason="pip install pypdf (the `test` extra)")
    for study in STUDIES:
        types = _pypdf_font_types(rendered[study] / "scale.pdf")
        assert types, f"{study}: no font found (the walk is broken)"
        assert "/Type3" not in types, f"{study}: Type 3 fonts in scale.pdf ({types})"
        assert types <= {"/Type0", "/CIDFontType2", "/TrueType"}, types


def test_plot_pdf_fonts_with_pdffonts(rendered):
    if shutil.which("pdffonts") is None:
        pytest.skip("pdffonts (poppler-utils) not on PATH")
    proc = subprocess.run(["pdffonts", str(rendered["with_predictions"] / "scale.pdf")], capture_output=True, text=True)
    lines = proc.stdout.splitlines()[2:]
    assert lines and not any("Type 3" in line for line in lines), proc.stdout
    assert all(" yes " in line for line in lines)  # embedded


# ------------------------------------------------------------------ loading and the CLI


def test_study_file_and_default_out_dir(tmp_path, monkeypatch):
    # a study file whose output_dir is relative to the current directory
    shutil.copytree(HERE / "single_seed", tmp_path / "studies_out" / "sweep")
    (tmp_path / "studies").mkdir()
    study = tmp_path / "studies" / "sweep.yaml"
    study.write_text("name: sweep\nbudget:\n  trials_per_cell: 3\nfinal:\n  seeds: [0]\n")
    monkeypatch.chdir(tmp_path)
    out = write_report("studies/sweep.yaml", provenance=PROVENANCE)
    assert out == Path("studies_out") / "sweep" / "report"  # beside the study's results.csv, not reports/<name>
    for name in ("results.md", "results.tex", "results_main.tex", "scale.png", "scale.pdf"):
        assert (tmp_path / "studies_out" / "sweep" / "report" / name).stat().st_size > 0
    assert not (tmp_path / "reports").exists()
    assert "# Results: sweep" in (out / "results.md").read_text()


def test_study_directory_name_falls_back_to_results():
    assert load_results(HERE / "single_seed").name == "single_seed"  # no study.yaml: the rows' `study`
    assert load_results(HERE / "scale_small").config["final"]["seeds"] == [0, 1, 2]


def test_ledger_is_read_through_results_table():
    """One reader: statuses, ids and numbers as orchestrator.ledger.results parses them."""
    data = load_results(HERE / "with_predictions")
    statuses = {r["status"] for r in data.rows}
    from orchestrator.ledger.results import STATUSES

    assert statuses == set(STATUSES)
    row = next(r for r in data.rows if r["phase"] == "final" and r["predictions"])
    assert isinstance(row["seed"], int) and isinstance(row["val_primary"], float) and isinstance(row["trial_id"], str)
    assert row["data"]["sizes"]["train"] > 0 and set(data.predictions(row)) == {"val"}
    assert data.predictions({"predictions": "predictions/absent.json"}) is None


def test_missing_results_is_a_user_error(tmp_path):
    with pytest.raises(PtcoreError, match="no results"):
        write_report(tmp_path, tmp_path / "r")
    with pytest.raises(PtcoreError, match="no such study"):
        write_report(tmp_path / "nope.yaml")


def test_cli(tmp_path, capsys):
    from orchestrator.cli import app as cli
    from orchestrator.cli import report as report_cli

    assert cli.subcommands()["report"] is report_cli.SUBCOMMAND
    assert cli.main(["report", str(HERE / "single_seed"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "results.md").is_file()
    printed = capsys.readouterr().out
    assert str(tmp_path / "r" / "results.tex") in printed and str(tmp_path / "r" / "results_main.tex") in printed
    assert cli.main(["report", str(tmp_path / "absent")]) == 2
    assert "error:" in capsys.readouterr().err


def test_escaping():
    assert tex_escape("a_b 50% & #1 {x}") == r"a\_b 50\% \& \#1 \{x\}"
    assert tex_escape("τ0=1.32, Δ ±") == r"$\tau$0=1.32, $\Delta$ $\pm$"


def test_method_listed_twice_gets_a_row_per_label(tmp_path):
    """Two variants of one method (study `label`s) are two rows, not one merged row."""
    import pandas as pd

    rows = pd.read_csv(HERE / "single_seed" / "results.csv")
    variants = rows[rows.method == "ptuning_v2"]
    both = pd.concat([rows, variants.assign(method="dynamic", method_label="dp_a", val_primary=0.25),
                      variants.assign(method="dynamic", method_label="dp_b", val_primary=0.75)])
    both["method_label"] = both["method_label"].fillna(both["method"])
    (tmp_path / "s").mkdir()
    both.to_csv(tmp_path / "s" / "results.csv", index=False)
    text = (write_report(tmp_path / "s", tmp_path / "r", provenance=PROVENANCE) / "results.md").read_text()
    line = {name: next(ln for ln in text.splitlines() if f"| {name} " in ln) for name in ("dp_a", "dp_b")}
    assert "25.0" in line["dp_a"] and "75.0" in line["dp_b"]


@pytest.mark.parametrize("study", STUDIES)
def test_method_notes_list_each_shown_methods_departures(study, built, rendered):
    """Every method in a report brings its registered departures from the paper (the same
    words as README "Departures from the papers"), in the markdown and in the LaTeX."""
    from ptcore.methods import get_method

    text, tex = md(rendered, study), (rendered[study] / "results.tex").read_text()
    shown = [m for m in built[study].methods if get_method(m).notes]
    assert shown, "a fixture must show a method with notes for this test to mean anything"
    for m in shown:
        for note in get_method(m).notes:
            assert f"  - {note}" in text
            assert tex_escape(note) in tex


def test_rows_show_the_configuration_they_ran(rendered):
    """A cell shows its search's structural selection; Trainable is that configuration's count."""
    text = md(rendered, "with_predictions")
    header, rows = table_rows(text, "Backbone")
    ptv2 = row_of(rows, "P-Tuning v2")
    assert ptv2[header.index("SST-2")].endswith("[prompt length=8, depth=2]")
    assert ptv2[header.index("Trainable")] == "13.4K"


def test_a_truncation_ladder_is_labelled_and_plotted_by_layers(built):
    """MiniLM kept at 2 and 6 layers: one model truncated, not two pretrained sizes."""
    from orchestrator.report.plots import ladder, make_figure

    rep = built["with_predictions"]
    assert [g.label for g in rep.groups] == ["MiniLM-L6-v2, first 2 layers, 15.6M params",
                                             "MiniLM-L6-v2, first 6 layers, 22.7M params"]
    assert ladder(rep) == "sentence-transformers/all-MiniLM-L6-v2"
    ax = next(a for a in make_figure(rep).axes if a.get_visible())
    assert ax.get_xscale() == "linear" and list(ax.get_xticks()) == [2.0, 6.0]
    assert "layers kept of MiniLM-L6-v2" in ax.get_xlabel()
