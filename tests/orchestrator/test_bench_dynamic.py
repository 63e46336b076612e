"""orchestrate bench --dynamic: every estimator row timed or refused with ptcore's own reason,
the ratios paired with prompt tuning's rounds, the placement section, the JSON, the tables and
the CLI (tiny random backbones, a few placement steps: a few seconds)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

TINY = {"hidden": 16, "layers": 2, "heads": 2, "intermediate": 32, "vocab": 300}  # every backbone, tiny and random
ENCODERS = ("minilm", "deberta-v3-xsmall-rand")  # MiniLM given sizes: a random BERT of its shape
PLACEMENT_STEPS = 5  # the placement synthetic's steps here: its shape, not its figures


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def dyn_result(tmp_path_factory):
    from orchestrator.bench.dynamic import run_dynamic

    out = tmp_path_factory.mktemp("dynbench") / "dynamic.json"
    result = run_dynamic(
        quick=True, sizes=TINY, batch=4, seq=12, prompt_length=3, repeats=3, warmup=0, threads=1, isolate_memory=False,
        placement_steps=PLACEMENT_STEPS, output=out,
    )  # fmt: skip
    return result, out


def _ptcore_refusal(name: str, estimator: str) -> str:
    """What ptcore itself says when a run builds ``dynamic`` with ``estimator`` on this backbone
    (check_run before the weights, then the model), or "" when it builds."""
    from ptcore.config import make_run_config
    from ptcore.errors import ConfigError
    from ptcore.model import build_model, check_run

    from orchestrator.bench.dynamic import build_backbone, model_spec, row_options

    bb = build_backbone(model_spec(name, TINY))
    method, options = row_options(estimator, 3)
    cfg = make_run_config({"task": "superglue/rte", "method": method, "method_args": options, "format": "head"})
    try:
        check_run(cfg, bb.config)
        build_model(cfg, bb)
    except ConfigError as e:
        return str(e)
    return ""


def test_every_row_is_timed_or_refused(dyn_result):
    from orchestrator.bench.dynamic import MODELS, ROWS

    result, _ = dyn_result
    assert set(result["models"]) == set(MODELS) and result["baseline"] == "prompt_tuning"
    assert {n: m["positions"] for n, m in result["models"].items()} == {
        "minilm": "absolute", "deberta-v3-xsmall-rand": "relative", "t5-small-rand": "relative-bucket"}  # fmt: skip
    for name, rows in result["rows"].items():
        assert list(rows) == list(ROWS), name  # the floor first, then each estimator
        for row, r in rows.items():
            if "step_ms" in r:
                assert r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"] and len(r["step_ms_all"]) == 3, (name, row)
                assert _positive(r["ratio_to_prompt_tuning"]) and _positive(r["peak_mb"]), (name, row)
                assert r["method"] == ("prompt_tuning" if row == "prompt_tuning" else "dynamic")
                assert r["estimator"] == (None if row == "prompt_tuning" else row)
                assert "mfu" not in r and "gflop_per_step" not in r  # no FLOP plan tells the estimators apart
            else:
                assert set(r) == {"unsupported"} and r["unsupported"].strip(), (name, row, r)
    for name in ENCODERS:
        rows = result["rows"][name]
        for row in ("prompt_tuning", "mixture", "mixture_soft"):  # the mixtures need no position table
            assert "step_ms" in rows[row], (name, row, rows[row])
            assert rows[row]["format"] == "head"
        for row in ("first_order", "mixture", "mixture_soft"):
            if "step_ms" in rows[row]:
                assert rows[row]["trainable_params"] > rows["prompt_tuning"]["trainable_params"]  # + the position selector
    assert "step_ms" in result["rows"]["minilm"]["first_order"]
    assert "step_ms" in result["rows"]["t5-small-rand"]["prompt_tuning"]  # rank classification, text to text
    assert result["rows"]["t5-small-rand"]["prompt_tuning"]["format"] == "text"


def test_first_order_is_refused_on_deberta_with_ptcores_line(dyn_result):
    result, _ = dyn_result
    row = result["rows"]["deberta-v3-xsmall-rand"]["first_order"]
    expected = _ptcore_refusal("deberta-v3-xsmall-rand", "first_order")
    assert expected and row == {"unsupported": expected.strip().splitlines()[0]}
    assert "absolute position" in row["unsupported"]
    assert _ptcore_refusal("minilm", "first_order") == ""  # BERT has the position table it reads


def test_ratios_are_paired_with_prompt_tunings_rounds(dyn_result):
    result, _ = dyn_result
    for name, rows in result["rows"].items():
        floor = rows["prompt_tuning"]
        assert floor["ratio_to_prompt_tuning"] == pytest.approx(1.0)
        for row, r in rows.items():
            if "step_ms" not in r:
                continue
            paired = statistics.median(t / b for t, b in zip(r["step_ms_all"], floor["step_ms_all"]))
            assert r["ratio_to_prompt_tuning"] == pytest.approx(paired, rel=2e-2), (name, row)  # step_ms_all is rounded to 0.01 ms
        assert floor["extra_mb"] == pytest.approx(0.0) and floor["peak_ratio_to_prompt_tuning"] == pytest.approx(1.0)
        for r in rows.values():
            if "step_ms" in r:
                assert r["extra_mb"] == pytest.approx(r["peak_mb"] - floor["peak_mb"])


def test_the_json_and_the_table(dyn_result):
    from orchestrator.bench.dynamic import dynamic_table

    result, out = dyn_result
    assert json.loads(out.read_text()) == result
    assert result["workload"] == {"batch": 4, "seq": 12, "prompt_length": 3, "task": "superglue/rte", "seed": 0}
    for key in ("versions", "git_commit", "cpu_count", "torch_threads", "device_name", "date", "repeats", "warmup",
                "load_avg_at_start", "warning", "memory_method"):  # fmt: skip
        assert key in result["meta"], key
    assert result["meta"]["sizes"] == TINY and result["meta"]["repeats"] == 3
    table = dynamic_table(result)
    lines = [ln for ln in table.splitlines() if ln.startswith("| deberta-v3-xsmall-rand")]
    assert [ln.split("|")[2].strip() for ln in lines] == [
        "prompt_tuning", "dynamic, first_order", "dynamic, mixture", "dynamic, mixture_soft"]  # fmt: skip
    assert "unsupported (1)" in lines[1]
    assert f"(1) {result['rows']['deberta-v3-xsmall-rand']['first_order']['unsupported']}" in table


# ------------------------------------------------------------------ placement: does the gradient teach where


def test_placement_section_one_run_per_estimator_and_seed(dyn_result):
    from orchestrator.bench.dynamic import ESTIMATORS, QUICK, placement_variants

    result, _ = dyn_result
    p = result["placement"]
    assert p["seeds"] == list(QUICK["placement_seeds"]) == [0] and p["steps"] == PLACEMENT_STEPS  # quick: one seed
    assert p["threads"] == 1 and p["level"] == "instance" and p["chance"] == 0.5 and p["backbone"]["positions"] == "absolute"
    rows = placement_variants()
    assert list(p["estimators"]) == list(rows) and list(rows)[:3] == list(ESTIMATORS)  # each estimator, then the dpt settings'
    for label in list(rows)[3:]:  # the dpt preset's selector and schedule, as the preset has them
        assert p["estimators"][label]["options"] == {"selector": "linear_relu", "tau0": 1.0, "tau_min": 0.5, "anneal": "reference",
                                                     "anneal_rate": 3e-6}
    for est, e in p["estimators"].items():
        assert [r["seed"] for r in e["runs"]] == p["seeds"], est
        for r in e["runs"]:
            assert "error" not in r, (est, r)
            assert 0.0 <= r["accuracy"] <= 1.0 and r["mse"] >= 0.0 and r["task_best_mse"] >= 0.0, (est, r)
            counts = r["split_counts"]
            assert len(counts["A"]) == len(counts["B"]) == 5 and sum(counts["A"]) + sum(counts["B"]) == 200  # l + 1 splits; the test inputs
            assert r["accuracy"] == pytest.approx((counts["A"][0] + counts["B"][-1]) / 200)  # A at split 0, B at split l
        assert e["accuracy_mean"] == pytest.approx(statistics.mean(r["accuracy"] for r in e["runs"]))
        assert e["mse_mean"] == pytest.approx(statistics.mean(r["mse"] for r in e["runs"]))
    assert result["meta"]["placement"] is True and result["meta"]["placement_steps"] == PLACEMENT_STEPS


def test_placement_table_follows_the_timing_table(dyn_result):
    from orchestrator.bench.dynamic import dynamic_table, placement_table, placement_variants

    result, _ = dyn_result
    table = dynamic_table(result)
    assert placement_table(result["placement"]) in table
    cells = lambda ln: [c.strip() for c in ln.split("|")[1:-1]]  # noqa: E731
    at = [i for i, ln in enumerate(table.splitlines()) if ln.startswith("| estimator ")]
    assert len(at) == 1 and table.index("| deberta-v3-xsmall-rand") < table.index("| estimator ")  # after the timing table
    rows = table.splitlines()[at[0]:]
    assert cells(rows[0]) == ["estimator", "placement accuracy (mean of seeds; chance 0.5)", "per seed", "test MSE (mean [per seed])"]
    lines = [ln for ln in rows[2:] if ln.startswith("| ")]
    assert [cells(ln)[0] for ln in lines] == list(placement_variants())
    for ln, est in zip(lines, placement_variants()):
        e = result["placement"]["estimators"][est]
        assert cells(ln)[1] == f"{e['accuracy_mean']:.3f}" and cells(ln)[2] == f"{e['runs'][0]['accuracy']:.3f}", ln
    assert "not evidence about T5" in table


def test_placement_task_is_deterministic_for_a_seed():
    from orchestrator.bench.dynamic import placement_task

    a = placement_task("mixture", steps=3, seed=1)
    b = placement_task("mixture", steps=3, seed=1)
    assert a == b and set(a) >= {"accuracy", "mse", "task_best_mse", "splits", "groups"}
    c = placement_task("mixture", steps=3, seed=1, options={"selector": "linear_relu"})  # the options reach the method
    assert c["splits"] != a["splits"] or c["mse"] != a["mse"]
    assert len(a["splits"]) == len(a["groups"]) == 200 and a["groups"][:4] == [0, 1, 0, 1]


# ------------------------------------------------------------------ memory in its own process; the CLI


def test_peak_memory_in_a_fresh_process():
    from orchestrator.bench.dynamic import DynWorkload, measure_memory, model_spec

    wl = DynWorkload(batch=2, seq=8, prompt_length=2)
    out = measure_memory(model_spec("deberta-v3-xsmall-rand", TINY), "mixture", wl, threads=1)
    assert _positive(out.get("peak_mb")) and out["steps"] == 2, out
    refused = measure_memory(model_spec("deberta-v3-xsmall-rand", TINY), "first_order", wl, isolate=False)
    assert "absolute position" in refused["unsupported"]


def test_cli_dynamic_writes_the_json(tmp_path, capsys):
    from orchestrator.cli.app import main

    out = tmp_path / "dyn.json"
    sizes = [a for k, v in TINY.items() for a in ("--dyn-size", f"{k}={v}")]
    rc = main(["bench", "--dynamic", "--quick", "--output", str(out), "--dyn-models", ",".join(ENCODERS), *sizes, "--dyn-batch", "2",
               "--dyn-seq", "8", "--prompt-length", "2", "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory",
               "--dyn-placement-seeds", "1,2", "--dyn-placement-steps", "2"])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) == {"workload", "baseline", "models", "rows", "meta", "placement"}
    assert res["placement"]["seeds"] == [1, 2] and res["placement"]["steps"] == 2
    assert [r["seed"] for r in res["placement"]["estimators"]["mixture"]["runs"]] == [1, 2]
    assert res["workload"] == {"batch": 2, "seq": 8, "prompt_length": 2, "task": "superglue/rte", "seed": 0}
    assert set(res["models"]) == set(ENCODERS) and res["models"]["minilm"]["hidden"] == 16
    assert res["meta"]["quick"] is True and res["meta"]["memory"] is False
    row = res["rows"]["minilm"]["mixture"]
    assert _positive(row["step_ms"]) and _positive(row["ratio_to_prompt_tuning"]) and "peak_mb" not in row  # --no-memory
    assert "unsupported" in res["rows"]["deberta-v3-xsmall-rand"]["first_order"]
    printed = capsys.readouterr().out
    assert "| minilm (absolute positions)" in printed and "dynamic, mixture_soft" in printed
    assert printed.index("| minilm (absolute positions)") < printed.index("placement accuracy (mean of seeds; chance 0.5)")
    rc = main(["bench", "--dynamic", "--quick", "--output", str(tmp_path / "np.json"), "--dyn-models", "minilm", *sizes, "--dyn-batch",
               "2", "--dyn-seq", "8", "--prompt-length", "2", "--repeats", "1", "--warmup", "0", "--no-memory", "--no-placement"])  # fmt: skip
    assert rc == 0 and "placement" not in json.loads((tmp_path / "np.json").read_text())
    assert "placement accuracy" not in capsys.readouterr().out
    assert main(["bench", "--dynamic", "--dyn-placement-seeds", "a,b", "--output", str(tmp_path / "z.json")]) == 2
    assert main(["bench", "--dynamic", "--dyn-size", "width=3", "--output", str(tmp_path / "x.json")]) == 2
    assert main(["bench", "--dynamic", "--dyn-models", "nope", "--output", str(tmp_path / "y.json")]) == 2
