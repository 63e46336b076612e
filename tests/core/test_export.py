"""ptcore.export / ``orchestrate export --format peft``: a run's adapter loads in PEFT and gives ptcore's logits.

Train-free: each test builds the run's model on a tiny random checkpoint written to a folder
(``ptcore.tiny.write_tiny_model``), moves its trainable tensors off their initial values
(LoRA's B starts at zero), saves the checkpoint as a run does (``<run>/checkpoint``,
``ptcore.checkpoint.save_checkpoint``), exports it, loads the adapter with
``peft.PeftModel.from_pretrained`` on a fresh copy of the base model and compares logits on an
unpadded batch: decoders, every input position (ptcore's ``runner.logits``); T5, the decoder's
logits for given labels. Tolerance ``atol=1e-5, rtol=1e-4`` in fp32 (the same modules; ptcore's
runner builds its own 4-D attention mask, PEFT lets transformers build it).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

peft = pytest.importorskip("peft")

from ptcore.backbones import load_backbone  # noqa: E402
from ptcore.checkpoint import save_checkpoint  # noqa: E402
from ptcore.config import RunConfig  # noqa: E402
from ptcore.errors import ConfigError  # noqa: E402
from ptcore.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_peft  # noqa: E402
from ptcore.model import build_model  # noqa: E402
from ptcore.tiny import write_tiny_model  # noqa: E402

# PEFT hands the model its prefix as `past_key_values`, which transformers 5.24+ deprecates (for `cache`)
# (and peft's note, when ptcore injects LoRA into GPT-2, that it turns fan_in_fan_out on for Conv1D)
pytestmark = [
    pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning"),
]

ATOL, RTOL = 1e-5, 1e-4
TEXT = ["premise: it rained on the road. hypothesis: the road is wet. answer:", "Question: who came home? Answer: the dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> the folder of a tiny random checkpoint (written once per module)."""
    root = tmp_path_factory.mktemp("tiny-models")
    made: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in made:
            made[family] = str(write_tiny_model(root / family, family))
        return made[family]

    return get


def make_run(tmp_path, model_dir: str, method: str, args: dict | None = None, fmt: str = "text", seed: int = 5):
    """A run directory with a checkpoint of ``method`` on ``model_dir``, its tensors perturbed. -> (run dir, model)"""
    cfg = RunConfig(task="superglue/cb", method=method, method_args=args or {}, model=model_dir, format=fmt)
    model = build_model(cfg, load_backbone(model_dir))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    run = tmp_path / "run"
    save_checkpoint(model, cfg, run / "checkpoint")
    return run, model.eval()


def load_peft(model_dir: str, adapter, seq2seq: bool):
    import transformers

    auto = transformers.AutoModelForSeq2SeqLM if seq2seq else transformers.AutoModelForCausalLM
    base = auto.from_pretrained(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(base, str(adapter)).eval()


def batch(model_dir: str):
    """Two rows of real text, cut to one length: unpadded."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [tok(t)["input_ids"] for t in TEXT]
    t = min(len(r) for r in rows)
    ids = torch.tensor([r[:t] for r in rows])
    return ids, torch.ones_like(ids)


def t5_logits(runner, ids, mask, labels):
    """ptcore's T5 decoder logits for ``labels`` (one target per source), as ``target_logprobs`` computes them."""
    rows = torch.arange(ids.shape[0])
    runner._state = runner._prefixes(ids.shape[0], rows)
    try:
        states, emask = runner._encode(ids, mask)
        dec_in = runner.lm._shift_right(labels.masked_fill(labels < 0, runner.lm.config.pad_token_id))
        return runner._decode(states[rows], emask[rows], dec_in)
    finally:
        runner._state = None


def compare(family: str, model_dir: str, model, adapter, prompt_length: int = 0):
    ids, mask = batch(model_dir)
    pm = load_peft(model_dir, adapter, seq2seq=family == "t5")
    with torch.no_grad():
        if family == "t5":
            labels = torch.tensor([[5, 9, 1], [7, 1, -100]])
            got = t5_logits(model.encoder.runner, ids, mask, labels)
            want = pm(input_ids=ids, attention_mask=mask, labels=labels).logits
        else:
            got = model.encoder.runner.logits(ids, mask)
            want = pm(input_ids=ids, attention_mask=mask).logits[:, prompt_length:]  # prompt tuning: PEFT returns the prompt's too
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    return pm


CASES = [
    ("gpt2", "prompt_tuning", {"prompt_length": 4}),
    ("llama", "prompt_tuning", {"prompt_length": 4}),
    ("t5", "prompt_tuning", {"prompt_length": 4}),
    ("gpt2", "lora", {"bias": "all"}),  # Conv1D (fan_in_fan_out) and trained biases
    ("llama", "lora", {"r": 4, "target_modules": "q_proj,k_proj,v_proj,o_proj"}),
    ("t5", "lora", {}),
    ("llama", "ptuning_v2", {"prompt_length": 4}),  # rotary positions: the keys are exported rotated by l
    ("qwen2", "ptuning_v2", {"prompt_length": 3, "reparameterize": True, "prefix_hidden_size": 16}),
]


@pytest.mark.parametrize("family,method,args", CASES, ids=[f"{f}-{m}" for f, m, _ in CASES])
def test_exported_adapter_gives_ptcore_logits(tiny, tmp_path, family, method, args):
    d = tiny(family)
    run, model = make_run(tmp_path, d, method, args)
    out = export_peft(run, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    conf = json.loads((out / ADAPTER_CONFIG).read_text())
    assert conf["peft_type"] == {"prompt_tuning": "PROMPT_TUNING", "lora": "LORA", "ptuning_v2": "PREFIX_TUNING"}[method]
    assert conf["task_type"] == ("SEQ_2_SEQ_LM" if family == "t5" else "CAUSAL_LM")
    compare(family, d, model, out, args.get("prompt_length", 0) if method == "prompt_tuning" else 0)
    if method == "lora":  # every trained tensor is in the adapter, under PEFT's names
        from safetensors.torch import load_file

        trained = {f"base_model.model.{n.removeprefix('encoder.backbone.').replace('.default.', '.')}"
                   for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
        assert trained and trained == set(load_file(str(out / ADAPTER_WEIGHTS)))


def test_a_checkpoint_directory_exports_too(tiny, tmp_path):
    run, model = make_run(tmp_path, tiny("gpt2"), "prompt_tuning", {"prompt_length": 2})
    out = export_peft(run / "checkpoint", tmp_path / "adapter")
    compare("gpt2", tiny("gpt2"), model, out, 2)


def test_ptuning_v2_export_needs_the_rotated_keys(tiny, tmp_path):
    """The same prefix table without the rotation (what a plain copy would write) is another model under PEFT."""
    from safetensors.torch import load_file, save_file

    d = tiny("llama")
    run, model = make_run(tmp_path, d, "ptuning_v2", {"prompt_length": 4})
    out = export_peft(run, tmp_path / "adapter")
    plain = model.encoder.prefix_encoder.prefix.detach()[0].contiguous()  # ptcore's table: PEFT's layout, unrotated
    assert load_file(str(out / ADAPTER_WEIGHTS))["prompt_embeddings"].shape == plain.shape
    save_file({"prompt_embeddings": plain}, str(out / ADAPTER_WEIGHTS))
    with pytest.raises(AssertionError):
        compare("llama", d, model, out)


REFUSED = [
    ("gpt2", "ptuning_v2", {"prompt_length": 2}, "text", "absolute position embeddings"),
    ("t5", "ptuning_v2", {"prompt_length": 2}, "text", "decoder's self-attention only"),
    ("llama", "ptuning_v2", {"prompt_length": 2, "depth": 1}, "text", "prompts every layer"),
    ("gpt2", "lora", {"train_layernorm": True}, "text", "does not carry"),
    ("gpt2", "prompt_tuning", {"prompt_length": 2}, "head", "head has no PEFT form"),
    ("gpt2", "finetune", {}, "text", "whole backbone"),
    ("bert", "lora", {}, "auto", "head has no PEFT form"),  # the encoder family runs format head only
]


@pytest.mark.parametrize("family,method,args,fmt,why", REFUSED, ids=[f"{f}-{m}-{fmt}" for f, m, _, fmt, _ in REFUSED])
def test_refused_in_one_line_and_nothing_written(tiny, tmp_path, family, method, args, fmt, why):
    run, _ = make_run(tmp_path, tiny(family), method, args, fmt=fmt)
    with pytest.raises(ConfigError, match=why) as e:
        export_peft(run, tmp_path / "adapter")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "adapter").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".adapter.")]  # no temp directory left


def test_dynamic_is_refused(tiny, tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    cfg = RunConfig(task="superglue/cb", method="dynamic", model=tiny("gpt2"), format="text")
    (ckpt / "run_config.json").write_text(json.dumps(cfg.model_dump()))
    save_file({"x": torch.zeros(1)}, str(ckpt / "trainable.safetensors"))
    with pytest.raises(ConfigError, match="selector network"):
        export_peft(tmp_path / "run", tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_not_a_run_and_a_nonempty_output_are_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match="neither a run directory"):
        export_peft(tmp_path, tmp_path / "adapter")
    run, _ = make_run(tmp_path, tiny("gpt2"), "prompt_tuning", {"prompt_length": 2})
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        export_peft(run, tmp_path / "adapter")
    assert [p.name for p in (tmp_path / "adapter").iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------- the CLI


def test_cli_export_writes_the_two_files(tiny, tmp_path, capsys):
    from orchestrator.cli.app import main

    run, model = make_run(tmp_path, tiny("t5"), "lora", {})
    out = tmp_path / "adapters" / "cb-lora"
    capsys.readouterr()
    assert main(["export", str(run), "--format", "peft", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert str(out / ADAPTER_CONFIG) in capsys.readouterr().out
    compare("t5", tiny("t5"), model, out)


def test_cli_refuses_a_head_run_with_exit_2(tiny, tmp_path, capsys):
    from orchestrator.cli.app import main

    run, _ = make_run(tmp_path, tiny("gpt2"), "prompt_tuning", {"prompt_length": 2}, fmt="head")
    out = tmp_path / "adapter"
    capsys.readouterr()  # what building the run printed
    assert main(["export", str(run), "--format", "peft", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "head has no PEFT form" in err and "\n" not in err
    assert not out.exists()
