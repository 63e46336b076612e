"""``orchestrate bench``: benchmark every method's step time, memory and MFU against fine-tuning
and PEFT, the generative families (``--generative``), dynamic prompting's position estimators
(``--dynamic``), and the orchestration overhead (the work is in :mod:`orchestrator.bench`,
imported when it runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from ptcore.config import DEFAULT_MODEL
from ptcore.fileio import write_json_atomic

from orchestrator.cli.subcommand import Subcommand

EPILOG = textwrap.dedent(
    """\
    examples:
      orchestrate bench --quick                          # ~5 min on 2 CPU cores
      PTCORE_DATA_DIR=../shared/data orchestrate bench   # the full bench -> reports/bench/bench.json
      orchestrate bench --no-orchestration --batch 32 --length 256 --output /tmp/b.json
      orchestrate bench --generative                     # decoder LMs and T5 vs PEFT -> reports/bench/generative.json
      orchestrate bench --generative --gen-models llama-small --gen-size hidden=512 --gen-size layers=8
      orchestrate bench --dynamic                        # dynamic's position estimators vs prompt tuning -> reports/bench/dynamic.json
      orchestrate bench --dynamic --quick --dyn-models minilm --no-memory
      orchestrate bench --dynamic --dyn-placement-seeds 0,1,2,3,4 --dyn-placement-steps 400

    Run it on an otherwise idle machine: timings, MFU and the orchestration CPU figures
    all assume nothing else competes for the cores.
    """
)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer repeats, depths and PEFT peers; smaller orchestration studies (<= 5 min on 2 CPU cores)")
    p.add_argument("--output", default=None, help="JSON result (default: reports/bench/bench.json; --generative: generative.json, "
                                                 "--dynamic: dynamic.json, --cli: cli.json, --ddp: ddp.json there)")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--padding", choices=["none", "mixed"], default="none", help="none: every token real; mixed: real lengths uniform in [length/2, length]")
    p.add_argument("--repeats", type=int, default=None, help="timed interleaved rounds (default 7; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per method first (default 2; --quick 1)")
    p.add_argument("--prompt-length", type=int, default=16, help="prompt / prefix length of every prompt method, ours and PEFT's")
    p.add_argument("--model", default=None, help="backbone (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--layers", type=int, default=None, help="keep the first k backbone layers")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data-dir", default=None, help="data for the orchestration studies (default: $PTCORE_DATA_DIR)")
    p.add_argument("--no-orchestration", action="store_true", help="skip the two Ray studies")
    p.add_argument("--no-peft", action="store_true", help="skip the PEFT peer")
    p.add_argument("--no-large", action="store_true", help="skip the BERT-base-sized memory comparison")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the tables")
    p.add_argument("--cli", action="store_true",
                   help="only the light commands' wall time (--help, ls, validate) in fresh processes (-> reports/bench/cli.json)")
    p.add_argument("--ddp", action="store_true",
                   help="only the data-parallel step: 1 vs 2 gloo workers, fine-tuning and P-Tuning v2 (-> reports/bench/ddp.json)")
    g = p.add_argument_group("generative rows (--generative)")
    g.add_argument("--generative", action="store_true",
                   help="only the generative families: finetune, lora, prompt_tuning, ptuning_v2 on small random GPT-2, Llama and T5, "
                        "each beside its PEFT peer (-> reports/bench/generative.json); --quick: smaller batch, fewer rounds")
    g.add_argument("--gen-models", default=None, metavar="NAME[,NAME]",
                   help="backbones (default: gpt2-small,llama-small,t5-small-rand)")
    g.add_argument("--gen-size", action="append", default=[], metavar="KEY=VALUE",
                   help="override a size of every backbone: hidden, layers, heads, kv_heads, intermediate, vocab (repeatable)")
    g.add_argument("--gen-batch", type=int, default=None, help="rows per step (default 8; --quick 4)")
    g.add_argument("--gen-source", type=int, default=None, help="source tokens per row, the longest (default 96; --quick 48)")
    g.add_argument("--gen-target", type=int, default=None, help="target tokens per row (default 8)")
    g.add_argument("--gen-padding", choices=["none", "mixed"], default="mixed",
                   help="mixed (default): source lengths uniform in [source/2, source]; none: every source full")
    g.add_argument("--no-memory", action="store_true", help="skip the peak memory (one fresh process per row; --generative and --dynamic)")
    d = p.add_argument_group("dynamic prompting's position estimators (--dynamic)")
    d.add_argument("--dynamic", action="store_true",
                   help="only dynamic prompting's position estimators: prompt_tuning and dynamic (position: instance) with "
                        "estimator first_order, mixture, mixture_soft, per step, on MiniLM, a random DeBERTa-v3 and a random T5, "
                        "then whether each estimator teaches the selector where the prompt goes (a tiny synthetic) "
                        "(-> reports/bench/dynamic.json); --quick: smaller batch, fewer rounds, one placement seed")
    d.add_argument("--dyn-models", default=None, metavar="NAME[,NAME]",
                   help="backbones (default: minilm,deberta-v3-xsmall-rand,t5-small-rand)")
    d.add_argument("--dyn-size", action="append", default=[], metavar="KEY=VALUE",
                   help="override a size of every backbone: hidden, layers, heads, intermediate, vocab (repeatable; "
                        "MiniLM becomes a random BERT of its shape)")
    d.add_argument("--dyn-batch", type=int, default=None, help="sequences per step (default 16; --quick 8)")
    d.add_argument("--dyn-seq", type=int, default=None, help="tokens per sequence, every one real (default 128; --quick 64)")
    d.add_argument("--dyn-placement-seeds", default=None, metavar="SEED[,SEED]",
                   help="seeds of the placement synthetic (does each estimator's gradient teach the selector where the "
                        "prompt goes, on a tiny random BERT, 1 thread; default 0,1,2; --quick 0)")
    d.add_argument("--dyn-placement-steps", type=int, default=None, help="training steps of each placement run (default 400; --quick 100)")
    d.add_argument("--no-placement", action="store_true", help="skip the placement synthetic")


def handle_bench(args: argparse.Namespace) -> int:
    from orchestrator.bench import DEFAULT_OUTPUT, run_bench  # deferred for startup time: bench modules load only when it runs
    from orchestrator.bench.report import tables  # deferred for startup time: bench modules load only when it runs

    spec = None
    if args.model or args.layers:
        spec = {"model": args.model or DEFAULT_MODEL, "layers": args.layers}
    if args.cli:
        from orchestrator.bench.cli_time import cli_table, measure_cli  # deferred for startup time: bench modules load only when it runs

        res = measure_cli(repeats=args.repeats or 5, log=lambda line: print(line, file=sys.stderr, flush=True))
        output = args.output or os.path.join(os.path.dirname(DEFAULT_OUTPUT), "cli.json")
        write_json_atomic(output, res)
        print(json.dumps(res, indent=2) if args.json else cli_table(res))
        print(f"wrote {output}", file=sys.stderr)
        return 0
    if args.ddp:
        from orchestrator.bench.ddp import ddp_table, measure_ddp  # deferred for startup time: bench modules load only when it runs

        res = measure_ddp(spec=spec, batch=args.batch, length=args.length, repeats=args.repeats or 7,
                          warmup=2 if args.warmup is None else args.warmup, log=lambda line: print(line, file=sys.stderr, flush=True))
        output = args.output or os.path.join(os.path.dirname(DEFAULT_OUTPUT), "ddp.json")
        write_json_atomic(output, res)
        print(json.dumps(res, indent=2) if args.json else ddp_table(res))
        print(f"wrote {output}", file=sys.stderr)
        return 0
    if args.generative:
        return _generative(args)
    if args.dynamic:
        return _dynamic(args)
    output = args.output or DEFAULT_OUTPUT
    result = run_bench(
        args.quick, batch=args.batch, length=args.length, padding=args.padding, repeats=args.repeats, warmup=args.warmup,
        prompt_length=args.prompt_length, device=args.device, threads=args.threads, backbone_spec=spec,
        peft=not args.no_peft, large=not args.no_large, orchestration=not args.no_orchestration,
        data_dir=args.data_dir or os.environ.get("PTCORE_DATA_DIR"), output=output,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else tables(result))
    print(f"wrote {output}", file=sys.stderr)
    return 0


def parse_sizes(items: list[str], flag: str = "--gen-size") -> dict[str, int]:
    """``["hidden=512", "layers=8"]`` -> {"hidden": 512, "layers": 8}; one line on a bad item."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise SystemExit(f"orchestrate bench: {flag} {item!r}: use KEY=INTEGER, e.g. {flag} hidden=512")
        out[key.strip()] = int(value)
    return out


def _generative(args: argparse.Namespace) -> int:
    from orchestrator.bench.generative import DEFAULT_OUTPUT, generative_table, run_generative  # deferred for startup time: bench modules load only when it runs

    try:
        result = run_generative(
            args.quick, models=[m.strip() for m in args.gen_models.split(",") if m.strip()] if args.gen_models else None,
            sizes=parse_sizes(args.gen_size), batch=args.gen_batch, source=args.gen_source, target=args.gen_target,
            padding=args.gen_padding, prompt_length=args.prompt_length, repeats=args.repeats, warmup=args.warmup, device=args.device,
            threads=args.threads, peft=not args.no_peft, memory=not args.no_memory, output=args.output or DEFAULT_OUTPUT,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )  # fmt: skip
    except ValueError as e:  # an unknown model or size, a bad length
        print(f"orchestrate bench --generative: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else generative_table(result))
    print(f"wrote {args.output or DEFAULT_OUTPUT}", file=sys.stderr)
    return 0


def _dynamic(args: argparse.Namespace) -> int:
    from orchestrator.bench.dynamic import DEFAULT_OUTPUT, dynamic_table, run_dynamic  # deferred for startup time: bench modules load only when it runs

    seeds = None
    if args.dyn_placement_seeds is not None:
        items = [x.strip() for x in args.dyn_placement_seeds.split(",") if x.strip()]
        if not items or not all(x.isdigit() for x in items):
            print(f"orchestrate bench --dynamic: --dyn-placement-seeds {args.dyn_placement_seeds!r}: use SEED[,SEED], e.g. 0,1,2",
                  file=sys.stderr)  # fmt: skip
            return 2
        seeds = [int(x) for x in items]
    try:
        result = run_dynamic(
            args.quick, models=[m.strip() for m in args.dyn_models.split(",") if m.strip()] if args.dyn_models else None,
            sizes=parse_sizes(args.dyn_size, "--dyn-size"), batch=args.dyn_batch, seq=args.dyn_seq, prompt_length=args.prompt_length,
            repeats=args.repeats, warmup=args.warmup, device=args.device, threads=args.threads, memory=not args.no_memory,
            placement=not args.no_placement, placement_seeds=seeds, placement_steps=args.dyn_placement_steps,
            output=args.output or DEFAULT_OUTPUT, log=lambda line: print(line, file=sys.stderr, flush=True),
        )  # fmt: skip
    except ValueError as e:  # an unknown model or size, a bad length
        print(f"orchestrate bench --dynamic: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else dynamic_table(result))
    print(f"wrote {args.output or DEFAULT_OUTPUT}", file=sys.stderr)
    return 0


SUBCOMMAND = Subcommand(
    "benchmark step time, memory and MFU of every method vs fine-tuning and PEFT; orchestration overhead",
    add_bench_args, handle_bench, EPILOG,
)
