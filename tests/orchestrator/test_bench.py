"""orchestrate bench: FLOP convention, interleaved timing, memory, the PEFT peer, the JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from orchestrator.bench.flops import EncoderDims, FlopPlan, plan_for, real_lengths, step_flops

TINY = {"vocab_size": 200, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 128}  # fmt: skip


# ------------------------------------------------------------------ FLOPs, by hand

# 2 layers, H=4, I=8: P = 4·16 + 2·4·8 = 128 matrix weights per layer; one sequence of 3 real tokens.
# per layer: matrices 2·128·3 = 768, attention 4·T·T_kv·H = 4·3·3·4 = 144
DIMS = EncoderDims(layers=2, hidden=4, intermediate=8)


def test_flops_finetune_by_hand():
    f = step_flops(DIMS, [3], plan_for("finetune", {}, 2))
    assert f["forward"] == 2 * (768 + 144)  # 1824
    # backward per layer: input grads 768 + attention 2x144 + weight grads 768 = 1824
    assert f["backward"] == 2 * (768 + 288 + 768) == 2 * f["forward"]
    assert f["total"] == 5472


def test_flops_ptuning_v2_top1_by_hand():
    """Prefix l=2 at layer 1 only: layer 0 runs forward only; layer 1 attends to 3+2 keys,
    gets no weight gradients, and (lowest prompted layer) no Q/K/V input-gradients nor dQ."""
    f = step_flops(DIMS, [3], plan_for("ptuning_v2", {"prompt_length": 2, "depth": 1}, 2))
    att1 = 4 * 3 * 5 * 4  # 240
    assert f["forward"] == (768 + 144) + (768 + att1)  # 1920
    assert f["backward"] == 2 * (16 + 2 * 4 * 8) * 3 + 1.5 * att1  # O-proj + FFN input grads 480 + 360 = 840
    assert f["total"] == 2760


def test_flops_ptuning_v2_all_layers_and_prompt_tuning_by_hand():
    f = step_flops(DIMS, [3], plan_for("ptuning_v2", {"prompt_length": 2}, 2))
    assert f["forward"] == 2 * (768 + 240)
    assert f["backward"] == 840 + (768 + 2 * 240)  # layer 0 partial, layer 1 full input-gradient path, no weight grads
    pt = step_flops(DIMS, [3], plan_for("prompt_tuning", {"prompt_length": 2}, 2))  # 5 tokens through both layers
    assert pt["forward"] == 2 * (2 * 128 * 5 + 4 * 5 * 5 * 4)  # 3360
    assert pt["backward"] == 2 * (1280 + 800)  # 4160
    dyn = step_flops(DIMS, [3], plan_for("dynamic", {"prompt_length": 2, "position": "instance"}, 2))
    assert dyn["forward"] == pt["forward"] + 2 * (768 + 144)  # + the no-grad pass over the plain input
    assert dyn["backward"] == pt["backward"]


def test_flops_count_real_tokens_only():
    import torch

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert real_lengths(mask) == [3, 2]
    plan = plan_for("finetune", {}, 2)
    both = step_flops(DIMS, real_lengths(mask), plan)["total"]
    assert both == step_flops(DIMS, [3], plan)["total"] + step_flops(DIMS, [2], plan)["total"]
    assert step_flops(DIMS, [0], plan)["total"] == 0


def test_synthetic_batch_padding():
    from orchestrator.bench.workload import Workload, load_spec_backbone, make_batch

    bb = load_spec_backbone({"random": TINY})
    full = make_batch(bb, Workload(batch=3, length=10))
    assert full["attention_mask"].sum().item() == 30 and (full["input_ids"][:, 0] == 2).all() and (full["input_ids"][:, -1] == 3).all()
    mixed = make_batch(bb, Workload(batch=8, length=10, padding="mixed", seed=1))
    lengths = mixed["attention_mask"].sum(1)
    assert lengths[0] == 10 and (lengths >= 5).all() and (lengths <= 10).all() and lengths.min() < 10
    for row, n in zip(mixed["input_ids"], lengths.tolist()):
        assert row[n - 1] == 3 and (row[n:] == 0).all()  # [SEP] closes the real tokens, then padding
    assert set(mixed["label"].tolist()) <= {0, 1}


def test_plan_for_depths():
    assert plan_for("ptuning_v2", {"depth": 2}, 6).prefix_layers == (4, 5)
    assert plan_for("ptuning_v2", {"depth": [0, 3]}, 6).lowest_grad_layer == 0
    assert plan_for("ptuning_v2", {}, 6).prefix_layers == tuple(range(6))
    assert plan_for("finetune", {}, 6) == FlopPlan(trains_weights=True)
    with pytest.raises(ValueError):
        plan_for("nope", {}, 6)


# ------------------------------------------------------------------ timing, CPU accounting


def test_time_interleaved_rotates_and_records_errors():
    from orchestrator.bench.steps import summarize, time_interleaved
    from orchestrator.bench.workload import Contender

    order: list[str] = []

    def stepper(name, fail_at=None):
        def step():
            order.append(name)
            if fail_at is not None and order.count(name) >= fail_at:
                raise RuntimeError("boom\nsecond line")
            return 0.0

        return step

    cs = [
        Contender("finetune", "ptcore", stepper("A"), None, 100, 10, 10, {"forward": 1e6, "backward": 2e6, "total": 3e6}),
        Contender("b", "ptcore", stepper("B"), None, 100, 1, 10),
        Contender("c", "peft", stepper("C", fail_at=3), None, 100, 1, 10),
    ]
    times, errors = time_interleaved(cs, warmup=1, repeats=3)
    assert order[:3] == ["A", "B", "C"]  # warm-up
    assert order[3:6] == ["A", "B", "C"] and order[6:8] == ["B", "C"]  # round 2 starts one later; C fails there
    assert errors == {"peft/c": "RuntimeError: boom"}
    assert len(times["ptcore/finetune"]) == len(times["ptcore/b"]) == 3
    stats = summarize(cs, times, errors, peak_gflops=1.0)
    assert stats["ptcore/finetune"]["ratio_to_finetune"] == pytest.approx(1.0)
    assert stats["ptcore/finetune"]["mfu"] > 0 and "mfu" not in stats["ptcore/b"]
    assert stats["peft/c"] == {"error": "RuntimeError: boom"}


def test_tree_cpu_counts_child_processes():
    from orchestrator.bench.orchestration import TreeCpu

    with TreeCpu(interval=0.05) as cpu:
        subprocess.run([sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass"], check=True)
    assert 0.4 < cpu.cpu_s < 5.0


def test_orchestration_derive_and_errors(monkeypatch, tmp_path):
    from orchestrator.bench import orchestration as O

    small = {"runs": 2, "wall_s": 100.0, "cpu_s": 150.0, "in_training_s": 10.0}
    large = {"runs": 6, "wall_s": 180.0, "cpu_s": 310.0, "in_training_s": 30.0}
    d = O.derive(small, large, lanes=2)
    assert d["trial_fixed_cpu_s"] == pytest.approx(160 / 4 - 40 / 8)  # 35
    assert d["trial_fixed_wall_s"] == pytest.approx(2 * 80 / 4 - 5)  # 35
    assert d["trials_per_hour"] == pytest.approx(3600 / 20)
    assert d["overhead_share"] == pytest.approx(1 - 30 / 360)
    assert d["notes"] == []
    noisy = O.derive(small, dict(large, wall_s=95.0), lanes=2)  # the larger study finished sooner: noise, said so
    assert noisy["trials_per_hour"] is None and "not slower" in noisy["notes"][0]
    monkeypatch.delenv("PTCORE_DATA_DIR", raising=False)
    assert "error" in O.bench_orchestration(True, None)

    def broken(path, log=None):
        raise RuntimeError("runner is being rewritten")

    monkeypatch.setattr(O, "run_one", broken)
    out = O.bench_orchestration(True, str(tmp_path))
    assert out["error"] == "RuntimeError: runner is being rewritten"


# ------------------------------------------------------------------ the whole bench on a tiny BERT


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    """One quick bench on a 4-layer hidden-32 random BERT, PEFT's LoRA made to refuse."""
    from orchestrator.bench import peft_peer, run_bench

    def refuses(peft, h, l):
        raise RuntimeError("refused for the test")

    out = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(peft_peer.PEERS, "lora", refuses)
        result = run_bench(
            quick=True, batch=2, length=12, repeats=2, warmup=1, prompt_length=4,
            backbone_spec={"random": TINY}, peft_names=["prompt_tuning", "lora", "prefix_tuning"],
            isolate_memory=False, large_config=dict(TINY, num_hidden_layers=2), orchestration=False,
            peak_sizes=(128,), output=out, threads=1,  # tiny models: one thread is faster and steadier
        )  # fmt: skip
    return result, out


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_bench_json_keys_and_values(tiny_result):
    result, out = tiny_result
    assert json.loads(out.read_text()) == result
    assert _positive(result["matmul_peak_gflops"])
    assert set(result["methods"]) == {
        "finetune", "prompt_tuning", "ptuning_v2", "ptuning_v2_top2", "dynamic", "lora",
        "finetune_reference_kernels", "ptuning_v2_reference_kernels",
    }  # fmt: skip
    assert {n: r["kernels"] for n, r in result["methods"].items()} == {
        n: "reference" if n.endswith("_reference_kernels") else "fast" for n in result["methods"]
    }
    for name, row in result["methods"].items():
        for key in ("step_ms", "peak_mb", "tokens_per_s", "mfu", "ratio_to_finetune", "gflop_per_step"):
            assert _positive(row[key]), (name, key, row.get(key))
    assert result["methods"]["finetune"]["ratio_to_finetune"] == pytest.approx(1.0)
    # the reference kernels are paired with fine-tuning on the reference kernels
    assert result["methods"]["finetune_reference_kernels"]["ratio_to_finetune"] == pytest.approx(1.0)
    # fewer FLOPs without the backbone's weight gradients
    assert result["methods"]["ptuning_v2"]["gflop_per_step"] < result["methods"]["finetune"]["gflop_per_step"]
    large = result["large"]
    assert _positive(large["methods"]["finetune"]["peak_mb"]) and _positive(large["methods"]["ptuning_v2"]["peak_mb"])
    assert _positive(large["ptuning_v2_to_finetune_peak"])
    assert result["orchestration"] == {"skipped": True}
    meta = result["meta"]
    for key in ("versions", "git_commit", "cpu_count", "torch_threads", "batch", "length", "repeats", "date"):
        assert key in meta
    assert meta["batch"] == 2 and meta["length"] == 12
    assert "hostname" not in json.dumps(meta).lower()


def test_bench_peft_peer(tiny_result):
    result, _ = tiny_result
    peft = result["peft"]
    if not result["meta"]["peft_installed"]:
        assert all("not installed" in v["unsupported"] for v in peft.values())
        return
    assert _positive(peft["prompt_tuning"]["step_ms"]) and _positive(peft["prompt_tuning"]["peak_mb"])
    assert peft["lora"] == {"unsupported": "RuntimeError: refused for the test"}
    assert "past key values" in peft["prefix_tuning"]["unsupported"]


def test_peft_missing_is_unsupported(monkeypatch):
    from orchestrator.bench.peft_peer import Unsupported, peft_contender

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(Unsupported, match="not installed"):
        peft_contender("lora", "lora", None, None)


def test_cli_registers_bench():
    from orchestrator.cli.app import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--no-orchestration", "--output", "x.json"])
    assert args.quick and args.no_orchestration and args.output == "x.json" and args.batch == 16 and args.length == 128


@pytest.mark.slow
def test_memory_subprocess(tmp_path):
    from orchestrator.bench.memory import measure_memory
    from orchestrator.bench.workload import Workload

    jobs = [{"name": "finetune", "family": "ptcore", "method": "finetune", "method_args": {}},
            {"name": "ptuning_v2", "family": "ptcore", "method": "ptuning_v2", "method_args": {"prompt_length": 4}}]  # fmt: skip
    t0 = time.time()
    out = measure_memory({"random": TINY}, jobs, Workload(batch=2, length=12, prompt_length=4), isolate=True)
    assert set(out) == {"ptcore/finetune", "ptcore/ptuning_v2"}
    assert all(_positive(v["peak_mb"]) for v in out.values()), out
    assert time.time() - t0 < 120


def test_ddp_bench_times_one_and_two_workers():
    """``orchestrate bench --ddp`` on a tiny random BERT: both methods at 1 and 2 gloo workers;
    two workers all-reduce the trainable gradients (+ loss and flag, fp32), one syncs nothing."""
    from orchestrator.bench.ddp import ddp_table, measure_ddp

    res = measure_ddp(spec={"random": TINY}, batch=4, length=12, warmup=0, repeats=1)
    for method, by_n in res["methods"].items():
        one, two = by_n["1"], by_n["2"]
        assert one["sync_bytes"] == 0 and one["speedup"] == 1.0 and one["median_s"] > 0
        assert two["sync_bytes"] == (two["trainable_params"] + 2) * 4 and two["median_s"] > 0
    assert res["methods"]["ptuning_v2"]["2"]["sync_bytes"] < res["methods"]["finetune"]["2"]["sync_bytes"] / 10
    assert "bytes synced/step" in ddp_table(res)
