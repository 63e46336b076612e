import json

from orchestrator.cli import main


def fake(root, task, label, seed, val, dev=0.5):
    d = root / task.replace("/", "_") / label / f"seed{seed}"
    d.mkdir(parents=True)
    r = {"task": task, "seed": seed, "val": {"primary": val}, "dev": {"primary": dev}, "trainable_pct": 0.3, "wall_s": 10.0}
    (d / "result.json").write_text(json.dumps(r))


def test_collect_mean_std(tmp_path, capsys):
    for seed, v in enumerate([0.6, 0.7, 0.8]):
        fake(tmp_path, "superglue/cb", "pt2", seed, v)
    fake(tmp_path, "superglue/cb", "pt", 0, 0.5)
    assert main(["collect", str(tmp_path), "--csv", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    assert "70.0 ± 10.0" in out  # mean and sample std of 60/70/80
    line_pt = next(l for l in out.splitlines() if "| pt " in l)
    assert "50.0" in line_pt and "±" not in line_pt  # single seed: no ±
    assert (tmp_path / "rows.csv").read_text().count("\n") == 5


def test_collect_empty_dir_is_an_error(tmp_path, capsys):
    assert main(["collect", str(tmp_path)]) == 2
    assert "no result.json" in capsys.readouterr().err
