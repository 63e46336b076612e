"""orchestrate bench --generative: the FLOP count by hand, every row beside its PEFT peer, the JSON."""

from __future__ import annotations

import copy
import json
import math

import pytest

from orchestrator.bench.genflops import GenDims, GenPlan, plan_for, step_flops

TINY = {"hidden": 16, "layers": 2, "heads": 4, "intermediate": 32, "vocab": 300}  # every backbone, tiny


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


# ------------------------------------------------------------------ FLOPs, by hand

# A Llama-like decoder layer: H=4, 4 query dims, 2 key/value dims, gated FFN of 8, vocab 10.
# Matrix weights per token: q 16 + k 8 + v 8 + o 16 + gate 32 + up 32 + down 32 = 144.
# One row of 2 source + 1 target tokens: 3 tokens, causal pairs 3·4/2 = 6, one head position.
LLAMA = GenDims("decoder", "llama", layers=1, decoder_layers=0, hidden=4, q_dim=4, kv_dim=2, intermediate=8, gated=True, vocab=10)


def test_decoder_flops_by_hand():
    ft = step_flops(LLAMA, [2], [1], plan_for("ptcore", "finetune", "decoder", 2))
    # forward: matrices 2·144·3 = 864, attention 4·4·6 = 96, head 2·4·10·1 = 80
    assert ft["forward"] == 864 + 96 + 80 == 1040
    # backward: matrices 864 (input) + 864 (weights), attention 2·96, head 80 + 80
    assert ft["backward"] == 2 * 864 + 192 + 160 == 2 * ft["forward"]
    pt = step_flops(LLAMA, [2], [1], plan_for("ptcore", "prompt_tuning", "decoder", 2))
    # 2 soft prompt positions: 5 tokens, 15 causal pairs; no weight gradients
    assert pt["forward"] == 2 * 144 * 5 + 4 * 4 * 15 + 80 == 1760
    assert pt["backward"] == 1440 + 480 + 80 == 2000
    p2 = step_flops(LLAMA, [2], [1], plan_for("ptcore", "ptuning_v2", "decoder", 2))
    # 2 prefix slots seen by each of the 3 queries: 6 + 6 = 12 pairs
    assert p2["forward"] == 864 + 4 * 4 * 12 + 80 == 1136
    assert p2["backward"] == 864 + 2 * 192 + 80 == 1328
    assert step_flops(LLAMA, [2], [1], plan_for("peft", "prefix_tuning", "decoder", 2)) == p2
    lora = step_flops(LLAMA, [2], [1], plan_for("ptcore", "lora", "decoder", 2, lora_r=1, lora_targets=["q_proj", "v_proj"]))
    # rank 1 on q (4+4) and v (4+2): 14 weights a token, 2·14·3 = 84 forward, twice that backward
    assert lora["forward"] == 864 + 96 + 80 + 84 == 1124
    assert lora["backward"] == 864 + 192 + 80 + 168 == 1304


# A T5 layer pair: H=4, q = kv = 4, gated FFN of 8, vocab 10; 3 source tokens, 2 target tokens.
# Encoder matrices 160 a token (x3), decoder self 64 + cross q/o 32 + FFN 96 a target token (x2),
# cross k/v 32 an encoder token (x3): 960 + 256 + 128 + 384 + 192 = 1920 forward.
T5 = GenDims("t5", "t5", layers=1, decoder_layers=1, hidden=4, q_dim=4, kv_dim=4, intermediate=8, gated=True, vocab=10)


def test_t5_flops_by_hand():
    ft = step_flops(T5, [3], [2], GenPlan(trains_backbone=True))
    # pairs: encoder 3·3 = 9, decoder self 2·3/2 = 3, cross 2·3 = 6 -> 4·4·18 = 288; head 2·4·10·2 = 160
    assert ft["forward"] == 1920 + 288 + 160 == 2368
    assert ft["backward"] == 2 * 1920 + 2 * 288 + 2 * 160 == 2 * ft["forward"]
    ours = step_flops(T5, [3], [2], plan_for("ptcore", "ptuning_v2", "t5", 1))
    # a prefix slot at every site: encoder 3·4 = 12, decoder self 3 + 2 = 5, cross 2·4 = 8 -> 25 pairs
    assert ours["forward"] == 1920 + 4 * 4 * 25 + 160 == 2480
    assert ours["backward"] == 1920 + 8 * 4 * 25 + 160 == 2880
    peft = step_flops(T5, [3], [2], plan_for("peft", "prefix_tuning", "t5", 1))
    # PEFT: decoder self 3 + 2 = 5 and cross 2·4 = 8 pairs; no gradient through the encoder nor cross k/v
    assert peft["forward"] == 1920 + 4 * 4 * (9 + 13) + 160 == 2432
    assert peft["backward"] == (256 + 128 + 384) + 8 * 4 * 13 + 160 == 1344


def test_flops_count_real_tokens_and_read_configs():
    plan = plan_for("ptcore", "finetune", "decoder", 2)
    both = step_flops(LLAMA, [2, 1], [1, 1], plan)["total"]
    assert both == step_flops(LLAMA, [2], [1], plan)["total"] + step_flops(LLAMA, [1], [1], plan)["total"]
    assert step_flops(LLAMA, [0], [0], plan)["total"] == 0
    from orchestrator.bench.generative import build_model, model_spec

    llama = GenDims.from_config(build_model(model_spec("llama-small", {"vocab": 300, "layers": 1})).config)
    assert (llama.hidden, llama.q_dim, llama.kv_dim, llama.intermediate, llama.gated) == (256, 256, 128, 704, True)
    gpt2 = GenDims.from_config(build_model(model_spec("gpt2-small", {"vocab": 300, "layers": 1})).config)
    assert (gpt2.q_dim, gpt2.kv_dim, gpt2.intermediate, gpt2.gated) == (256, 256, 1024, False)
    t5 = GenDims.from_config(build_model(model_spec("t5-small-rand", {"vocab": 300, "layers": 1})).config)
    assert (t5.arch, t5.q_dim, t5.intermediate, t5.gated, t5.decoder_layers) == ("t5", 256, 704, True, 1)
    with pytest.raises(ValueError, match="unknown size"):
        model_spec("llama-small", {"width": 3})


# ------------------------------------------------------------------ the batch and the loss


def test_batch_layout_and_the_peer_loss_is_ptcores():
    """A decoder LM's rows are left-padded source + target with target_mask; T5's sources and
    labels apart. With dropout off, PEFT's LoRA (B = 0 at init) and ptcore's LoRA give the very
    loss of ptcore's fine-tuning: the peer's loss is computed as ptcore's runner computes it."""
    import torch

    from orchestrator.bench.generative import GenWorkload, build, build_backbone, make_batch, model_spec

    wl = GenWorkload(batch=3, source=6, target=2, prompt_length=2)
    for name in ("gpt2-small", "llama-small", "t5-small-rand"):
        bb = build_backbone(model_spec(name, TINY))
        b = make_batch(bb.config, wl)
        assert b["sources"][0] == 6 and all(3 <= n <= 6 for n in b["sources"]) and b["targets"] == [2, 2, 2]
        if name == "t5-small-rand":
            assert b["attention_mask"].sum(1).tolist() == b["sources"] and b["labels"].shape == (3, 2)
            assert (b["labels"][:, -1] == bb.config.eos_token_id).all() and b["rows"].tolist() == [0, 1, 2]
        else:
            assert b["attention_mask"].sum(1).tolist() == [s + 2 for s in b["sources"]]
            assert b["target_mask"][:, -2:].eq(1).all() and b["target_mask"].sum().item() == 6
            assert (b["input_ids"][:, -1] == bb.config.eos_token_id).all()
            assert (b["input_ids"][b["attention_mask"] == 0] == bb.config.pad_token_id).all()  # left padding
        losses, built = {}, {}
        jobs = [{"impl": i, "method": m} for i, m in (("ptcore", "finetune"), ("ptcore", "lora"), ("peft", "lora"),
                                                      ("ptcore", "prompt_tuning"), ("peft", "prompt_tuning"))]  # fmt: skip
        for job in jobs:
            key = f"{job['impl']}/{job['method']}"
            built[key] = c = build(job, bb, GenWorkload(batch=3, source=6, target=2, padding="none", prompt_length=2), check=False)
            c.model.eval()  # no dropout: the same function of the same weights
        with torch.no_grad():  # PEFT's soft prompt set to ptcore's: the two place it alike (in front of the (encoder) input)
            built["peft/prompt_tuning"].model.prompt_encoder["default"].embedding.weight.copy_(built["ptcore/prompt_tuning"].model.prompt)
            losses = {key: _loss(c, key, bb) for key, c in built.items()}
        assert losses["ptcore/lora"] == pytest.approx(losses["ptcore/finetune"], abs=1e-5), name
        assert losses["peft/lora"] == pytest.approx(losses["ptcore/finetune"], abs=1e-5), name
        assert losses["peft/prompt_tuning"] == pytest.approx(losses["ptcore/prompt_tuning"], abs=1e-5), name
        assert losses["ptcore/prompt_tuning"] != pytest.approx(losses["ptcore/finetune"], abs=1e-5), name  # the prompt is read


def _loss(c, key: str, bb) -> float:
    from orchestrator.bench.generative import GenWorkload, lm_loss, make_batch, token_logprobs

    batch = make_batch(bb.config, GenWorkload(batch=3, source=6, target=2, padding="none"))
    if key.startswith("ptcore/"):
        return lm_loss(c.model.runner.target_logprobs(batch), batch).item()
    keys = ("input_ids", "attention_mask", "decoder_input_ids") if "labels" in batch else ("input_ids", "attention_mask")
    return lm_loss(token_logprobs(c.model(**{k: batch[k] for k in keys}, use_cache=False).logits, batch), batch).item()


# ------------------------------------------------------------------ the rows


@pytest.fixture(scope="module")
def gen_result(tmp_path_factory):
    from orchestrator.bench.generative import run_generative

    out = tmp_path_factory.mktemp("genbench") / "generative.json"
    result = run_generative(
        quick=True, sizes=TINY, batch=4, source=8, target=3, prompt_length=3, repeats=1, warmup=0,
        isolate_memory=False, peak_sizes=(128,), threads=1, output=out,
    )  # fmt: skip
    return result, out


def test_every_family_method_row_and_peer(gen_result):
    import peft as peft_lib

    from orchestrator.bench.generative import MODELS, build_model, model_spec, peer_config

    result, out = gen_result
    assert json.loads(out.read_text()) == result
    assert set(result["models"]) == set(MODELS)
    assert {n: m["family"] for n, m in result["models"].items()} == {"gpt2-small": "decoder", "llama-small": "decoder", "t5-small-rand": "t5"}
    assert result["peers"] == {"lora": "lora", "prompt_tuning": "prompt_tuning", "ptuning_v2": "prefix_tuning"}
    l, h = 3, TINY["hidden"]
    for name in MODELS:
        ours, theirs = result["ptcore"][name], result["peft"][name]
        assert set(ours) == {"finetune", "lora", "prompt_tuning", "ptuning_v2"}
        assert set(theirs) == {"lora", "prompt_tuning", "prefix_tuning"}
        for method, row in [*ours.items(), *theirs.items()]:
            for key in ("step_ms", "step_ms_min", "step_ms_max", "peak_mb", "gflop_per_step", "achieved_tflops", "mfu", "ratio_to_finetune"):
                assert _positive(row.get(key)), (name, method, key, row)
            assert row["step_ms_min"] <= row["step_ms"] <= row["step_ms_max"]
        # the trainable parameters, against what the models themselves report
        model = build_model(model_spec(name, TINY))
        dims = GenDims.from_config(model.config)
        sites = 3 if dims.arch == "t5" else 1  # T5: encoder, decoder and cross-attention prefixes
        assert ours["finetune"]["trainable_params"] == model.num_parameters() == ours["finetune"]["total_params"]
        assert ours["prompt_tuning"]["trainable_params"] == theirs["prompt_tuning"]["trainable_params"] == l * h
        assert ours["ptuning_v2"]["trainable_params"] == sites * dims.layers * 2 * l * dims.kv_dim
        seq2seq = dims.arch == "t5"
        for method, peer in (("lora", "lora"), ("prompt_tuning", "prompt_tuning"), ("ptuning_v2", "prefix_tuning")):
            reported = peft_lib.get_peft_model(copy.deepcopy(model), peer_config(peft_lib, peer, seq2seq, l)).get_nb_trainable_parameters()[0]
            assert theirs[peer]["trainable_params"] == reported, (name, peer)
            if method == "lora":
                assert ours["lora"]["trainable_params"] == reported, name  # the same targets, rank and layers
        # fine-tuning is the baseline of its own backbone; prompts and LoRA do fewer FLOPs than it
        assert ours["finetune"]["ratio_to_finetune"] == pytest.approx(1.0)
        for method in ("prompt_tuning", "ptuning_v2", "lora"):
            assert ours[method]["gflop_per_step"] < ours["finetune"]["gflop_per_step"]


def test_rows_count_real_tokens(gen_result):
    from orchestrator.bench.generative import GenWorkload, build_model, make_batch, model_spec

    result, _ = gen_result
    wl = GenWorkload(**result["workload"])
    assert (wl.batch, wl.source, wl.target, wl.padding) == (4, 8, 3, "mixed")
    for name in result["models"]:
        b = make_batch(build_model(model_spec(name, TINY)).config, wl)
        real = sum(b["sources"]) + sum(b["targets"])
        assert real < wl.batch * (wl.source + wl.target)  # mixed lengths: padding is not counted
        for row in [*result["ptcore"][name].values(), *result["peft"][name].values()]:
            assert row["tokens_per_step"] == real and row["target_tokens_per_step"] == wl.batch * wl.target


def test_table_lists_each_peer_beside_its_method(gen_result):
    from orchestrator.bench.generative import generative_table

    lines = [ln for ln in generative_table(gen_result[0]).splitlines() if ln.startswith("| llama-small")]
    assert [(c.split("|")[2].strip(), c.split("|")[3].strip()) for c in lines] == [
        ("finetune", "ptcore"), ("lora", "ptcore"), ("lora", "peft"), ("prompt_tuning", "ptcore"), ("prompt_tuning", "peft"),
        ("ptuning_v2", "ptcore"), ("prefix_tuning", "peft"),
    ]  # fmt: skip


# ------------------------------------------------------------------ memory in its own process; the CLI


def test_peak_memory_in_a_fresh_process():
    from orchestrator.bench.generative import GenWorkload, measure_memory, model_spec

    spec = model_spec("t5-small-rand", TINY)
    out = measure_memory(spec, {"impl": "ptcore", "method": "ptuning_v2"}, GenWorkload(batch=2, source=6, target=2, prompt_length=2), threads=1)
    assert _positive(out.get("peak_mb")) and out["steps"] == 2, out
    bad = measure_memory(spec, {"impl": "peft", "method": "no_such_peer"}, GenWorkload(batch=2, source=6, target=2), isolate=False)
    assert "no generative PEFT peer" in bad["unsupported"]


def test_cli_generative_writes_the_json(tmp_path, capsys):
    from orchestrator.cli.app import main

    out = tmp_path / "gen.json"
    sizes = [a for k, v in TINY.items() for a in ("--gen-size", f"{k}={v}")]
    rc = main(["bench", "--generative", "--quick", "--output", str(out), "--gen-models", "llama-small,t5-small-rand", *sizes,
               "--gen-batch", "2", "--gen-source", "6", "--gen-target", "2", "--prompt-length", "2", "--repeats", "1", "--warmup", "0",
               "--threads", "1", "--no-memory"])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) == {"workload", "matmul_peak_gflops", "matmul_peak", "models", "ptcore", "peft", "peers", "meta"}
    assert res["workload"] == {"batch": 2, "source": 6, "target": 2, "padding": "mixed", "prompt_length": 2, "seed": 0}
    assert set(res["models"]) == {"llama-small", "t5-small-rand"}
    assert res["models"]["llama-small"]["config"]["hidden"] == 16 and res["models"]["llama-small"]["spec"]["kv_heads"] == 2
    for key in ("versions", "git_commit", "cpu_count", "torch_threads", "device_name", "date", "repeats", "warmup", "kernels",
                "flop_convention", "load_avg_at_start", "warning"):  # fmt: skip
        assert key in res["meta"], key
    assert res["meta"]["sizes"] == TINY and res["meta"]["flop_convention"] == "orchestrator/bench/genflops.py"
    row = res["ptcore"]["t5-small-rand"]["ptuning_v2"]
    assert _positive(row["step_ms"]) and _positive(row["mfu"]) and "peak_mb" not in row  # --no-memory
    assert "| t5-small-rand (t5)" in capsys.readouterr().out
    assert main(["bench", "--generative", "--gen-size", "width=3", "--output", str(tmp_path / "x.json")]) == 2
