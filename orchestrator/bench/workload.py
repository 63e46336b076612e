"""What every benchmarked method runs: one backbone, one synthetic batch, one training step.

* **Backbone** — a spec dict, so a subprocess can rebuild exactly the same thing:
  ``{"model": hub id or dir, "layers": k}`` loads through :func:`ptcore.backbones.load_backbone`;
  ``{"random": {BertConfig kwargs}}`` builds a random BERT from a config (no weights to load).
* **Batch** — ``batch × length`` random token ids of a classification task (``glue/sst2``, 2
  labels): ``[CLS] w… [SEP]``, segment 0, random labels. ``padding="none"``: every sequence
  is ``length`` real tokens; ``"mixed"``: real lengths uniform in ``[length/2, length]`` (one
  sequence full, so the padded width stays ``length``).
* **Step** — what ptcore's training loop does per batch: ``on_train_step``, forward, the task
  loss, ``zero_grad``, backward, gradient clipping, AdamW (weight decay off for biases and
  LayerNorm, as in ``ptcore.train``) and the LR scheduler, then ``loss.item()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from ptcore.backbones import backbone_from_model, load_backbone
from ptcore.config import make_run_config
from ptcore.methods import make_method_config
from ptcore.tasks import get_task

from orchestrator.bench.flops import EncoderDims, plan_for, real_lengths, step_flops

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
STEPS = 10_000  # the LR schedule's length: the bench's few steps stay in its warmup
BERT_BASE = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512,
}  # fmt: skip


@dataclass(frozen=True)
class Workload:
    batch: int = 16
    length: int = 128
    padding: str = "none"  # none | mixed
    task: str = "glue/sst2"
    seed: int = 0
    prompt_length: int = 16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Contender:
    """One trainable thing the bench steps: a ptcore method or a PEFT peer."""

    name: str
    family: str  # "ptcore" | "peft"
    step: Callable[[], float]  # one training step; returns the loss
    model: Any
    tokens: int  # real (non-padding) input tokens per step
    trainable_params: int
    total_params: int
    flops: Optional[dict[str, float]] = None  # flops.step_flops of one step (ptcore methods)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique across families (ptcore and PEFT both have a ``prompt_tuning``)."""
        return job_key({"family": self.family, "name": self.name})


def job_key(job: dict[str, Any]) -> str:
    return f"{job['family']}/{job['name']}"


def row_lengths(padding: str, batch: int, length: int, shortest: int, generator):
    """Real tokens per row: ``none``: all ``length``; ``mixed``: uniform in [length/2, length]
    (at least ``shortest``), the first row full so the padded width stays ``length``. -> (batch,)"""
    import torch  # deferred: torch stays out of the bench's import (orchestrate --help)

    if padding == "mixed":
        lengths = torch.randint(max(shortest, length // 2), length + 1, (batch,), generator=generator)
        lengths[0] = length
        return lengths
    if padding == "none":
        return torch.full((batch,), length)
    raise ValueError(f"padding {padding!r}: use 'none' or 'mixed'")


# ------------------------------------------------------------------ backbone


def load_spec_backbone(spec: dict[str, Any]):
    """A ptcore Backbone from a spec (see the module docstring)."""
    if "random" in spec:
        import torch
        from transformers import AutoModel, BertConfig

        torch.manual_seed(int(spec.get("seed", 0)))
        model = AutoModel.from_config(BertConfig(**spec["random"]))
        return backbone_from_model(model, None, name=spec.get("name", "random-bert"))
    return load_backbone(spec.get("model", DEFAULT_MODEL), spec.get("layers"))


def describe_backbone(backbone) -> dict[str, Any]:
    c = backbone.config
    return {
        "name": backbone.name,
        "layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
        "heads": c.num_attention_heads,
        "intermediate": c.intermediate_size,
        "params": sum(p.numel() for p in backbone.model.parameters()),
    }


# ------------------------------------------------------------------ batch


def _special_ids(backbone) -> tuple[int, int, int]:
    tok = backbone.tokenizer
    pad = backbone.config.pad_token_id if backbone.config.pad_token_id is not None else 0
    if tok is not None and tok.cls_token_id is not None and tok.sep_token_id is not None:
        return int(tok.cls_token_id), int(tok.sep_token_id), int(pad)
    vocab = backbone.config.vocab_size
    return (101, 102, int(pad)) if vocab > 1000 else (2, 3, int(pad))


def make_batch(backbone, workload: Workload, device="cpu") -> dict[str, Any]:
    """Synthetic classification batch (see the module docstring)."""
    import torch

    g = torch.Generator().manual_seed(workload.seed)
    b, t = workload.batch, workload.length
    cls_id, sep_id, pad_id = _special_ids(backbone)
    vocab = backbone.config.vocab_size
    low = min(999, vocab // 2)  # skip [unused]/special ids of BERT vocabularies
    ids = torch.randint(low, vocab, (b, t), generator=g)
    lengths = row_lengths(workload.padding, b, t, 3, g)
    pos = torch.arange(t).unsqueeze(0)
    mask = (pos < lengths.unsqueeze(1)).long()
    ids[:, 0] = cls_id
    ids[torch.arange(b), lengths - 1] = sep_id
    ids = ids.masked_fill(mask == 0, pad_id)
    num_labels = getattr(get_task(workload.task), "num_labels", 2) or 2
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "label": torch.randint(0, num_labels, (b,), generator=g),
        "example_index": torch.arange(b),
    }
    return {k: v.to(device) for k, v in batch.items()}


# ------------------------------------------------------------------ optimizer + step


def ptcore_contender(
    name: str, method: str, method_args: dict[str, Any], backbone, workload: Workload, device="cpu", run_args: Optional[dict[str, Any]] = None
) -> Contender:
    """A ptcore method built with ptcore's own code (``build_model`` on a ``RunConfig``);
    ``run_args``: run settings beyond the workload's (e.g. ``kernels``)."""
    from ptcore.model import build_model, count_params  # deferred: pulls torch (orchestrator.bench docstring)

    cfg = make_run_config(
        {"task": workload.task, "method": method, "method_args": dict(method_args), "seed": workload.seed, "batch_size": workload.batch, **(run_args or {})}
    )
    bb = backbone.copy()  # each contender its own: prompt methods freeze and hook the backbone they wrap
    model = build_model(cfg, bb).to(device)
    model.train()
    batch = make_batch(bb, workload, device)
    step = train_step(model, batch, cfg)

    lengths = real_lengths(batch["attention_mask"])
    dims = EncoderDims.from_config(bb.config)
    flops = step_flops(dims, lengths, plan_for(method, make_method_args(method, method_args), dims.layers))
    trainable, total = count_params(model)
    return Contender(
        name, "ptcore", step, model, sum(lengths), trainable, total, flops,
        {"method": method, "method_args": dict(method_args), "kernels": cfg.kernels},
    )  # fmt: skip


def train_step(model, batch: dict[str, Any], cfg) -> Callable[[], float]:
    """One training step on ``batch`` as ptcore's loop takes it, as a closure: the method's
    per-step hook (e.g. the Gumbel temperature), forward, the task kind's loss, ``zero_grad``,
    backward, clipping at ``cfg.max_grad_norm``, ptcore's AdamW and its schedule (a run's
    defaults over :data:`STEPS` steps), then ``loss.item()``."""
    import torch

    from ptcore.train import make_optimizer  # deferred: pulls torch (orchestrator.bench docstring)

    params, optimizer, scheduler = make_optimizer(model, cfg.resolved()["lr"], cfg.weight_decay, cfg.warmup_ratio, STEPS)
    kind, state = model.kind, {"step": 0}

    def step() -> float:
        model.encoder.on_train_step(state["step"], STEPS)
        loss = kind.loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        return loss.item()

    return step


def make_method_args(method: str, method_args: dict[str, Any]) -> dict[str, Any]:
    """The method's options with its defaults filled in (what the FLOP plan reads)."""
    return make_method_config(method, method_args).model_dump()


# ------------------------------------------------------------------ which methods


def ptcore_jobs(quick: bool, layers: int, prompt_length: int = 16) -> list[dict[str, Any]]:
    """finetune, prompt tuning, P-Tuning v2 at several depths, (reparameterized), dynamic."""
    l = prompt_length
    jobs: list[dict[str, Any]] = [
        {"name": "finetune", "method": "finetune", "method_args": {}},
        {"name": "prompt_tuning", "method": "prompt_tuning", "method_args": {"prompt_length": l}},
        {"name": "ptuning_v2", "method": "ptuning_v2", "method_args": {"prompt_length": l}},  # every layer
    ]
    for k in ((2,) if quick else (4, 2, 1)):
        if k < layers:
            jobs.append({"name": f"ptuning_v2_top{k}", "method": "ptuning_v2", "method_args": {"prompt_length": l, "depth": k}})
    jobs.append({"name": "lora", "method": "lora", "method_args": {"r": 8}})  # peft's LoRA on query/value
    if not quick:
        jobs.append({"name": "ptuning_v2_reparam", "method": "ptuning_v2", "method_args": {"prompt_length": l, "reparameterize": True}})
    jobs.append(
        {"name": "dynamic", "method": "dynamic", "method_args": {"base": "shallow", "prompt_length": l, "position": "instance"}}
    )
    # before/after of ptcore.kernels: torch's dropout and transformers' SDPA attention
    for j in jobs[:3:2]:
        jobs.append({**j, "name": f"{j['name']}_reference_kernels", "run_args": {"kernels": "reference"}})
    for j in jobs:
        j["family"] = "ptcore"
    return jobs
