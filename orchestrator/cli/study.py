"""``orchestrate study FILE``: run a study (Ray Tune search per cell, then the final seeds, tracked
in MLflow) and write its results.csv and report; ``--dry-run`` prints the plan and starts nothing."""

from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from typing import Any

from tabulate import tabulate

from ptcore.errors import PtcoreError

from orchestrator.cli.subcommand import Subcommand
from orchestrator.execution.trial import runs_locally
from orchestrator.report import write_report
from orchestrator.study import LoadedStudy, final_seeds, load_study
from orchestrator.study.preflight import check_disk, disk_budget, disk_lines, preflight

# measured on this 2-core CPU machine: CPU-s a Ray Train worker-group trial spends before it
# trains (a controller and a worker process importing torch and transformers)
STARTUP_S = 29.0


EPILOG = textwrap.dedent(
    """\
    examples:
      orchestrate study studies/scale_sweep.yaml --dry-run
      PTCORE_DATA_DIR=../shared/data orchestrate study studies/scale_sweep.yaml
      orchestrate study studies/scale_sweep.yaml --resume        # after Ctrl-C / kill -9 / more trials
      orchestrate study studies/scale_sweep_cluster.yaml --address auto
    """
)


def _startup_line(ls: LoadedStudy, plan: dict[str, Any]) -> str:
    s = ls.study
    if runs_locally(s.resources.model_dump(), s.ray.trial_mode):
        return f"each runs in one of {s.budget.max_concurrent} reused trial processes (Ray Train local mode: no per-trial start-up)"
    return (f"Ray Train worker groups: start-up alone ~{plan['trials_total'] * STARTUP_S / s.budget.max_concurrent / 60:.0f} min "
            f"at ~{STARTUP_S:.0f} s/trial")


def add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="study file (YAML), e.g. studies/scale_sweep.yaml")
    p.add_argument("--resume", action="store_true", help="continue a study whose output dir holds finished work")
    p.add_argument("--address", default=None, help="Ray cluster address (default: the study's ray.address, $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (cells x trials x seeds, resources, output dir); start nothing")
    p.add_argument("--output", "--output-dir", dest="output_dir", default=None,
                   help="override the study's output_dir, which gets results.csv and, at the end, the report in "
                        "<output_dir>/report (--output-dir: the older spelling)")
    p.add_argument("--retry-failed", action="store_true", help="with --resume: run the failed runs (status error) again")
    p.add_argument("--verbose", action="store_true", help="show Ray/Tune/worker logs")


def concurrency_line(ls: LoadedStudy) -> str:
    """How many trials run at once: ``max_concurrent``, capped by what the cluster's CPUs and
    GPUs can hold (a trial takes workers x cpus_per_worker CPUs, workers x gpus_per_worker GPUs)."""
    s = ls.study
    res = s.resources
    cpu = res.workers_per_trial * res.cpus_per_worker
    gpu = res.workers_per_trial * res.gpus_per_worker
    need = f"a trial takes {cpu:g} CPU" + (f" and {gpu:g} GPU" if gpu else "")
    if 0 < res.gpus_per_worker < 1:
        need += f" ({math.floor(1 / res.gpus_per_worker + 1e-9)} workers share a GPU)"
    if ls.study.ray.address is not None:
        caps = [f"{s.budget.max_concurrent} (max_concurrent)", "cluster CPUs / " + f"{cpu:g}"] + ([f"cluster GPUs / {gpu:g}"] if gpu else [])
        return f"up to min({', '.join(caps)}); {need}"
    cpus = s.ray.num_cpus or os.cpu_count() or 1
    gpus = _local_gpus() if gpu else 0  # counting GPUs imports torch: only when the study asks for them
    fits = [math.floor(cpus / cpu + 1e-9)] + ([math.floor(gpus / gpu + 1e-9)] if gpu else [])
    n = min([s.budget.max_concurrent, *fits])
    where = f"this machine's {cpus} CPU" + (f", {gpus} GPU" if gpu else "")
    line = f"{n} trial(s) (max_concurrent {s.budget.max_concurrent}; {where}); {need}"
    if n == 0:
        line += "; nothing fits here: lower the resources or run on a cluster (--address)"
    return line


def _local_gpus() -> int:
    try:
        import torch  # deferred for startup time (seconds): only a plan whose trials take GPUs counts them

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - no torch / broken CUDA: no GPUs
        return 0


def plan_lines(ls: LoadedStudy) -> list[str]:
    plan = ls.plan()
    s = ls.study
    res = s.resources
    per = s.final.runs_per_trial
    restricted = [f"{m.display()} on {', '.join(m.backbones)} only" for m in s.methods if m.backbones is not None]
    lines = [
        f"study {plan['study']}  ({plan['file'] or 'no file'}, hash {ls.file_hash})",
        f"  cells        {plan['cells']} = {len(s.backbones)} backbone(s) x {len(s.tasks)} task(s) x {len(s.methods)} method(s)"
        + (f", less the excluded ({'; '.join(restricted)})" if restricted else ""),
        f"  backbones    {', '.join(plan['backbones'])}",
        f"  tasks        {', '.join(plan['tasks'])}",
        f"  methods      {', '.join(plan['methods'])}",
        *([f"  regimes      {'; '.join(r.describe(s) for r in s.regimes)}"] if s.regimes else []),
        f"  search       {plan['search_trials']} trials ({s.budget.trials_per_cell}/cell; Optuna TPE seed {s.budget.seed}, "
        f"ASHA grace {s.budget.grace_period} rf {s.budget.reduction_factor:g}"
        + (f", stop starting trials after {s.budget.time_budget_s:g} s" if s.budget.time_budget_s else "")
        + ")",
        f"  final        {plan['final_runs']} runs = {plan['cells']} cells x seeds {plan['final_seeds']}"
        + (" (regimes may set their own)" if s.regimes else "") + " "
        f"in {plan['final_trials']} trials (" + (f"up to {per} runs each, packed by backbone)" if per else "one per cell)"),
        f"  trials       {plan['trials_total']} in all, {s.budget.max_concurrent} at a time; " + _startup_line(ls, plan),
        f"  resources    {res.workers_per_trial} worker/trial x {res.cpus_per_worker:g} CPU, {res.gpus_per_worker:g} GPU"
        + (" (data-parallel: train.batch_size is the global batch)" if res.workers_per_trial > 1 else ""),
        f"  at once      {concurrency_line(ls)}",
        f"  train        {', '.join(f'{k}={v}' for k, v in s.train.items()) or '(ptcore defaults)'}",
        f"  data         {plan['data_dir'] or '-'}  [{plan['data_source']}]",
        f"  output       {plan['output_dir']}  (results.csv, cache/, state/, report/)",
        f"  tracking     {plan['mlflow_uri']}  experiment {ls.experiment_name!r}",
        f"  optuna       {plan['optuna_storage']}  studies {ls.name}/<cell>",
        f"  ray          {plan['ray_address']}; storage {plan['storage_path']}",
    ]
    if ls.data_dir is None:
        lines.append("  warning      no data_dir and PTCORE_DATA_DIR is unset: ptcore will try the Hugging Face hub (offline: set PTCORE_DATA_DIR)")
    rows = []
    for c in ls.cells():
        rows.append(
            [
                c.index + 1,
                c.id,
                ", ".join(f"{k}={v}" for k, v in c.method.fixed.items()) or "-",
                ", ".join(f"{k}~{sp.describe()}" for k, sp in c.method.search.items()) or "(none: fixed config)",
                s.budget.trials_per_cell if c.method.search else 0,
                len(final_seeds(s, c)),
            ]
        )
    lines.append("")
    lines.extend(tabulate(rows, headers=["#", "cell", "fixed", "search", "trials", "seeds"], tablefmt="simple").splitlines())
    return lines


def summary_table(summary: list[dict[str, Any]]) -> str:
    def f(v, d=4):
        return "-" if v is None else f"{v:.{d}f}" if isinstance(v, float) else v

    rows = [
        [
            s["backbone"], s["task"], s["method"], s["search"], f(s["best_dev"]), s["best_params"],
            s["final_ok"], f(s["val_mean"]), f(s["val_std"]), f(s["test_mean"]), f(s["trainable_pct"], 3),
            "yes" if s["done"] else "NO",
        ]
        for s in summary
    ]  # fmt: skip
    headers = ["backbone", "task", "method", "search ok/pruned/err", "best dev", "best params", "seeds", "val mean", "val std", "test", "trainable %", "done"]
    return tabulate(rows, headers=headers, tablefmt="github")


def _remote(address: str | None) -> bool:
    """Whether trials run on a Ray cluster (any address but 'local'), whose nodes hold their temp
    files: the disk budget then checks this machine's output directory alone."""
    address = address or os.environ.get("RAY_ADDRESS")
    return bool(address) and address != "local"


def handle_study(args: argparse.Namespace) -> int:
    if args.retry_failed and not args.resume:
        raise PtcoreError("--retry-failed continues a study: use it with --resume")
    ls = load_study(args.file, output_dir=args.output_dir)
    # the output dir can be written, the backbones load, every task's files exist and parse:
    # before any directory, Ray or model
    sizes: dict[str, dict[str, int]] = {}
    data, notes = preflight(ls, starting=not args.dry_run, sizes=sizes)
    # the disk budget: what the plan writes against the free space, before anything starts
    # (a study, and its plan; not `validate`: the estimate builds every model on torch's meta device)
    fp, places = disk_budget(ls, sizes, resume=args.resume, cluster=_remote(args.address or ls.study.ray.address))
    if args.dry_run:
        print("\n".join(plan_lines(ls) + [f"  data check   {line}" for line in data] + [f"  warning      {n}" for n in notes]
                        + disk_lines(fp, places)))
        check_disk(ls, fp, places)  # after the plan: what would be refused, and why
        return 0
    check_disk(ls, fp, places)
    from orchestrator.execution.runner import run_study  # deferred for startup time: the runner's modules load only when a study runs

    summary = run_study(ls, resume=args.resume, address=args.address, verbose=args.verbose, retry_failed=args.retry_failed)
    print()
    print(summary_table(summary))
    print(f"\nresults: {ls.output_dir / 'results.csv'}   MLflow: orchestrate ui {ls.path or ls.output_dir}")
    try:
        report = write_report(ls.output_dir)
    except PtcoreError as e:  # the study itself is done and on disk: say why there is no report
        print(f"warning: no report: {e}", file=sys.stderr)
        report = None
    if report:
        print(f"report: {report}")
    not_done = [s["cell"] for s in summary if not s["done"]]
    if not_done:
        print(f"{len(not_done)} cell(s) incomplete (failed runs; see the error column of results.csv): {', '.join(not_done)}", file=sys.stderr)
        return 1
    return 0


SUBCOMMAND = Subcommand(
    "run a study: Ray Tune search per cell (Optuna + ASHA), final seeds, MLflow tracking", add_study_args, handle_study, EPILOG,
)
