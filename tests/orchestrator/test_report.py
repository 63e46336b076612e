"""``orchestrate report``: tables and figures rendered from fixed results tables.

Fixtures (``tests/fixtures/report/``):

- ``scale_small``: 2 backbones x 3 methods x 2 tasks x 3 seeds, with search rows and study.yaml;
- ``missing_cell``: a cell whose final runs all failed, a cell never run, a seed that failed,
  and an NER task reported on its test split;
- ``single_seed``: one seed, no search rows, no study.yaml.

Golden files live in ``tests/fixtures/report/expected/``; regenerate them with
``UPDATE_GOLDEN=1 python -m pytest tests/orchestrator/test_report.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import report
from orchestrator.report import load_study, paired_pvalue, tex_escape, write_report
from ptcore.errors import PtcoreError

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "report"
EXPECTED = HERE / "expected"
STUDIES = ("scale_small", "missing_cell", "single_seed")
PROVENANCE = {"versions": {"python": "3.12.0", "ptcore": "0.1.0", "torch": "2.13.0", "pandas": "3.0.0"}}
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def render(study: str, out: Path) -> Path:
    return write_report(HERE / study, out, provenance=PROVENANCE)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Each fixture study rendered once for the module (tests only read the outputs)."""
    root = tmp_path_factory.mktemp("reports")
    return {study: render(study, root / study) for study in STUDIES}


def check_golden(actual: str, name: str) -> None:
    path = EXPECTED / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.is_file(), f"missing golden {path}; run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 regenerates it)"


@pytest.mark.parametrize("study", STUDIES)
def test_golden_markdown_and_latex(study, rendered):
    out = rendered[study]
    check_golden((out / "results.md").read_text(), f"{study}.md")
    check_golden((out / "results.tex").read_text(), f"{study}.tex")


@pytest.mark.parametrize("study", STUDIES)
def test_figures_written(study, rendered):
    out = rendered[study]
    png, pdf = (out / "scale.png").read_bytes(), (out / "scale.pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
    assert not list(out.glob(".*.tmp"))


def test_output_is_deterministic(rendered, tmp_path):
    a, b = rendered["scale_small"], render("scale_small", tmp_path / "again")
    for name in ("results.md", "results.tex", "scale.pdf"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_main_table_content(rendered):
    md = (rendered["scale_small"] / "results.md").read_text()
    lines = [l for l in md.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:5] == ["Backbone", "Method", "CB", "RTE", "Avg"]
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:8]]
    # backbones smallest first, fine-tuning first within each backbone
    assert rows[0][0] == "MiniLM-L6-v2 (2 layers, 11.2M)" and rows[3][0] == "MiniLM-L6-v2 (6 layers, 22.7M)"
    assert [r[1] for r in rows] == ["Fine-tuning", "Prompt tuning", "P-Tuning v2"] * 2
    assert rows[0][5] == "(ref.)" and rows[0][6] == "100.0"
    assert "±" in rows[0][2] and rows[0][2].startswith("**")  # FT best on CB for the small backbone
    assert rows[1][2].endswith("†")  # prompt tuning is significantly worse than FT
    assert rows[1][5].startswith("-")
    assert "ttest_rel" in md and "paired" in md and "seeds 0, 1, 2" in md
    assert "dev split carved from the official training data" in md
    assert "git commit 3f2c9a1b7d4e" in md and "torch 2.13.0" in md
    assert "lr=0.03, prompt_length=32" in md  # best search config of prompt tuning


def test_missing_and_failed_cells(rendered):
    md = (rendered["missing_cell"] / "results.md").read_text()
    row = next(l for l in md.splitlines() if l.startswith("|") and "P-Tuning v2" in l)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "–" and cells[5] == "–"  # RTE failed on every seed -> no Avg either
    dyn = next(l for l in md.splitlines() if l.startswith("|") and "Dynamic prompting" in l)
    assert [c.strip() for c in dyn.strip("|").split("|")][3] == "–"  # CB never run
    assert "(n=2)" in md  # a failed seed
    assert "WNUT-17 entity F1 (official test)" in md
    assert "no successful final run (3 failed)" in md and "(not run)" in md


def test_single_seed_has_no_spread_or_test(rendered):
    md = (rendered["single_seed"] / "results.md").read_text()
    table = "\n".join(l for l in md.splitlines() if l.startswith("|"))
    assert "±" not in table and "†" not in table
    assert "No significance test: fewer than 2 paired seeds" in md
    assert "No search trials recorded." in md


def test_latex_compiles(rendered, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base)")
    kpse = shutil.which("kpsewhich")
    if kpse is None or not subprocess.run([kpse, "booktabs.sty"], capture_output=True, text=True).stdout.strip():
        pytest.skip("booktabs.sty not installed (apt-get install texlive-latex-recommended)")
    for study in STUDIES:
        out = tmp_path / study
        shutil.copytree(rendered[study], out)
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "results.tex"],
            cwd=out, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, f"{study}: pdflatex failed:\n{proc.stdout[-3000:]}"
        assert (out / "results.pdf").stat().st_size > 1000


def test_study_file_and_default_out_dir(tmp_path, monkeypatch):
    # a study file whose output_dir is relative to the current directory
    shutil.copytree(HERE / "scale_small", tmp_path / "studies_out" / "sweep")
    (tmp_path / "studies").mkdir()
    study = tmp_path / "studies" / "sweep.yaml"
    study.write_text("name: sweep\nbudget:\n  trials_per_cell: 3\nfinal:\n  seeds: [0, 1, 2]\n")
    monkeypatch.chdir(tmp_path)
    out = write_report("studies/sweep.yaml", provenance=PROVENANCE)
    assert out == Path("reports") / "sweep"
    for name in ("results.md", "results.tex", "scale.png", "scale.pdf"):
        assert (tmp_path / "reports" / "sweep" / name).stat().st_size > 0
    assert "# Results: sweep" in (out / "results.md").read_text()


def test_study_directory_name_falls_back_to_results(tmp_path):
    assert load_study(HERE / "single_seed").name == "single_seed"  # no study.yaml: the rows' `study`
    assert load_study(HERE / "scale_small").config["final"]["seeds"] == [0, 1, 2]


def test_missing_results_is_a_user_error(tmp_path):
    with pytest.raises(PtcoreError, match="no results"):
        write_report(tmp_path, tmp_path / "r")
    with pytest.raises(PtcoreError, match="no such study"):
        write_report(tmp_path / "nope.yaml")


def test_cli(tmp_path, capsys):
    from orchestrator import cli

    report.register_cli()
    assert "report" in cli.COMMANDS
    assert cli.main(["report", str(HERE / "single_seed"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "results.md").is_file()
    assert str(tmp_path / "r" / "results.tex") in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "absent")]) == 2
    assert "error:" in capsys.readouterr().err


def test_paired_test_and_escaping():
    from scipy.stats import ttest_rel

    a, b = {0: 70.0, 1: 72.0, 2: 71.0}, {0: 75.0, 1: 75.5, 2: 77.0}
    p, n = paired_pvalue(a, b)
    assert n == 3 and p == pytest.approx(ttest_rel([70, 72, 71], [75, 75.5, 77]).pvalue)
    assert paired_pvalue({0: 1.0}, {0: 2.0}) == (None, 1)
    assert paired_pvalue({0: 1.0, 1: 2.0}, {2: 1.0, 3: 2.0}) == (None, 0)  # paired by seed, not position
    assert tex_escape("a_b 50% & #1 {x}") == r"a\_b 50\% \& \#1 \{x\}"


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
    md = (write_report(tmp_path / "s", tmp_path / "r", provenance=PROVENANCE) / "results.md").read_text()
    line = {name: next(ln for ln in md.splitlines() if f"| {name} " in ln) for name in ("dp_a", "dp_b")}
    assert "25.0" in line["dp_a"] and "75.0" in line["dp_b"]
