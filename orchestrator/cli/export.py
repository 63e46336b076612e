"""``orchestrate export RUN --format peft --output DIR``: a trained run's adapter in PEFT's format
(``adapter_config.json`` + ``adapter_model.safetensors``), for ``peft.PeftModel.from_pretrained``.

What exports and what is refused (one line, exit 2, nothing written): :mod:`ptcore.export`."""

from __future__ import annotations

import argparse
import textwrap

from orchestrator.cli.subcommand import Subcommand

FORMATS = ("peft",)

EPILOG = textwrap.dedent(
    """\
    examples:
      orchestrate run --task superglue/cb --method lora --model Qwen/Qwen2.5-0.5B --set format=text --output runs/cb-lora
      orchestrate export runs/cb-lora --format peft --output adapters/cb-lora

    then, in Python:
      base = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B")
      model = peft.PeftModel.from_pretrained(base, "adapters/cb-lora")

    exports: prompt_tuning (decoder LMs, T5), lora (decoder LMs, T5), ptuning_v2 (decoder LMs with rotary
    positions: Llama, Mistral, Qwen2/3, Gemma). Refused: format head runs (the task head has no PEFT form),
    finetune, dynamic, ptuning_v2 on T5 or GPT-2 (PEFT places or numbers the prefix otherwise).
    """
)


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run's --output directory (with checkpoint/) or a checkpoint directory")
    p.add_argument("--format", choices=FORMATS, default="peft", help="what to write (peft: a PEFT adapter directory)")
    p.add_argument("--output", required=True, metavar="DIR", help="the adapter directory to write (new or empty)")


def handle_export(args: argparse.Namespace) -> int:
    from ptcore.export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_peft  # deferred for startup time: imports torch and peft

    out = export_peft(args.run, args.output)
    print(f"wrote {out / ADAPTER_CONFIG} and {out / ADAPTER_WEIGHTS} (load with peft.PeftModel.from_pretrained(base, {str(out)!r}))")
    return 0


SUBCOMMAND = Subcommand(
    "write a trained run's adapter in PEFT's format (prompt tuning, LoRA, P-Tuning v2 where PEFT places it alike)",
    add_export_args, handle_export, EPILOG,
)
