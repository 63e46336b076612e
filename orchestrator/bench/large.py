"""Peak memory at BERT-base size: fine-tuning vs P-Tuning v2 (goal: PT2 ≤ 0.7 × fine-tuning).

A random BERT built from a config (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary
30522: the bert-base-uncased architecture, no weights downloaded), same batch and lengths
as the rest of the bench, each method measured alone by ``memory.py``.
"""

from __future__ import annotations

from typing import Any, Optional

from orchestrator.bench.memory import measure_memory
from orchestrator.bench.workload import BERT_BASE

GOAL = 0.7


def large_jobs(prompt_length: int) -> list[dict[str, Any]]:
    return [
        {"name": "finetune", "family": "ptcore", "method": "finetune", "method_args": {}},
        {"name": "ptuning_v2", "family": "ptcore", "method": "ptuning_v2", "method_args": {"prompt_length": prompt_length}},
    ]


def bench_large(
    workload, device: str = "cpu", steps: int = 2, threads: Optional[int] = None, isolate: bool = True, config: Optional[dict] = None
) -> dict[str, Any]:
    cfg = dict(config or BERT_BASE)
    spec = {"random": cfg, "name": "bert-base-sized (random weights)"}
    measured = measure_memory(spec, large_jobs(workload.prompt_length), workload, device, steps, threads, isolate)
    methods = {key.split("/", 1)[1]: v for key, v in measured.items()}
    out: dict[str, Any] = {
        "backbone": {"name": spec["name"], "layers": cfg["num_hidden_layers"], "hidden": cfg["hidden_size"],
                     "heads": cfg["num_attention_heads"], "intermediate": cfg["intermediate_size"]},
        "methods": methods,
        "goal_ratio": GOAL,
    }  # fmt: skip
    ft, pt2 = methods.get("finetune", {}).get("peak_mb"), methods.get("ptuning_v2", {}).get("peak_mb")
    if ft and pt2:
        out["ptuning_v2_to_finetune_peak"] = pt2 / ft
        out["meets_goal"] = pt2 / ft <= GOAL
    return out
