"""``orchestrate bench --dynamic``: the cost of a training step of each of dynamic prompting's
position-gradient estimators, side by side, against plain prompt tuning on the same backbone.

Rows per backbone: ``prompt_tuning`` (the floor: the same shallow prompt of length l, no
choice) and ``dynamic`` (``base: shallow``, ``position: instance``, ``length: none``,
``pool_size: 1``, the same l) with each ``estimator`` (``ptcore/methods/dynamic/select.py``):
``first_order`` (the position/segment-embedding estimate: one prompted encoder pass),
``mixture`` (the DP reference's straight-through mixture of the l+1 assembled input sequences,
hard forward) and ``mixture_soft`` (the same mixture, soft forward). Every dynamic row also pays
the instance-level choice's gradient-free pass over the unprompted input; the floor does not.

* **Backbones** (:data:`MODELS`, ``models`` / ``--dyn-models`` picks among them):
  ``minilm``, the packaged all-MiniLM-L6-v2 (absolute positions; loaded offline);
  ``deberta-v3-xsmall-rand``, a random DeBERTa-v3-style encoder of DeBERTa-v3-xsmall's shape
  (384 wide, 12 layers, 6 heads, FFN 1536, vocabulary 128,100; relative c2p + p2c attention,
  no absolute positions, no segments: ``first_order`` is refused there); and
  ``t5-small-rand``, a random T5 v1.1 from ``ptcore.tiny`` (the generative bench's: 256 wide,
  4 + 4 layers, 4 heads, FFN 704, vocabulary 8192), trained text to text (``format: text``).
  A row ptcore refuses (its one-line ``ConfigError``, from ``check_run`` or the method's
  encoder, as a run would say it) is ``{"unsupported": that line}``: ``first_order`` on a
  backbone without an absolute position table (DeBERTa, T5), and on T5 every dynamic row with
  a ptcore that does not place a prompt around the input there.
  ``sizes`` (``--dyn-size``) overrides ``hidden``, ``layers``, ``heads``, ``intermediate`` and
  ``vocab`` of every backbone; MiniLM given sizes becomes a random BERT of its shape with the
  sizes over it (no weights load: tests).
* **Task and batch** (:class:`DynWorkload`) — ``superglue/rte`` (2 labels). Encoders: a head on
  the hidden states (``format: head``), ``batch`` x ``seq`` random token ids, every token real
  (``orchestrator/bench/workload.py``'s batch: ``[CLS] w... [SEP]``, segment 0, random labels).
  T5: rank classification over RTE's label words (``format: text``), ``batch`` sources of
  ``seq`` random ids ending with the end token, each read with both labels' targets, laid out
  by the task kind's own ``collate``.
* **Build** — as a run builds: ``make_run_config`` (task, method, options, seed, batch size,
  format), ``check_run`` on the backbone's config, ``ptcore.model.build_model`` on a private copy
  of the backbone (ptcore's default kernels), ``train()`` mode.
* **Step** — as ptcore's loop takes one: ``on_train_step`` (the Gumbel temperature), forward,
  the task kind's loss, ``zero_grad``, backward, gradient clipping, AdamW and the linear
  warmup/decay schedule of ``ptcore.train.make_optimizer`` (a run's defaults; the bench's few
  steps stay in the warmup of a 10,000-step schedule, as the other benches), then ``loss.item()``.
* **Timing** (``steps.py``): per backbone, every row warms up, then interleaved rounds (the
  order rotated each round); step time median [min-max] and ``ratio_to_prompt_tuning``, the
  median over rounds of ``t_row / t_prompt_tuning`` within the same round (paired, so drift
  cancels). No FLOPs or MFU: the estimators add gathers, a (l+1)-way stacked sequence and
  elementwise work that the matrix-multiply FLOP convention does not count, so one plan would
  give every row the same figure.
* **Peak memory** (``memory.py``'s window: CUDA ``max_memory_allocated``; CPU weight bytes + RSS
  growth over ``memory_steps`` steps): each row in a fresh ``python -m orchestrator.bench.dynamic``
  process, after one unmeasured priming step of the same row on a tiny model of the same
  architecture; ``extra_mb`` is the row's peak minus prompt tuning's on the same backbone (the
  estimator's extra memory, the instance pass's included). ``memory=False`` skips it.
* **Placement** (:func:`placement_task`, the JSON's ``placement``, the second table;
  ``placement=False`` skips it): step time does not say which estimator to prefer; this says
  whether an estimator's gradient teaches the selector *where* to put the prompt. The synthetic
  (moved here from ``tests/methods/test_dynamic.py``, whose test still runs it): a frozen tiny
  random BERT (hidden 32, 2 layers, 2 heads, FFN 64, vocabulary 100, no dropout; seeded), a
  frozen random prompt of length 4 (N(0, 1)), inputs ``[CLS] m w w w [SEP]`` whose marker ``m``
  (token 10 or 11) puts each in one of two groups; the target output of a group is the frozen
  encoder's own output with the prompt at split 0 (group A) or split l (group B), so a selector
  that places every input right reaches MSE 0. Only the position selector (``position:
  instance``, ``init: random``, the given ``estimator``) trains: Adam at lr 0.03, 400 steps of 32
  fresh inputs, the Gumbel temperature annealed over them; then, at evaluation (argmax), the
  accuracy of the chosen split on 200 held-out inputs (chance 0.5: one split for every input
  serves one group) and the test MSE. Beside it, ``task_best_mse``: the test MSE of the best
  single split for every input (what a task-level choice can at best reach; no training). Per
  estimator, seeds 0, 1, 2 (``placement_seeds``; ``quick``: seed 0 and 100 steps), with 1 torch
  thread whatever ``threads`` says (tiny matrices: more threads only contend), and the mean over
  seeds. Its figures come from a tiny random BERT, an absolute-position encoder: they say how
  the estimators behave there, and are no evidence about T5 (relative position buckets) or any
  pretrained model.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from ptcore.backbones import backbone_from_model, load_backbone
from ptcore.config import make_run_config
from ptcore.errors import ConfigError
from ptcore.families import family_of
from ptcore.presets import get_preset

from orchestrator.bench import finish, resolve_device
from orchestrator.bench.memory import measure_steps, run_module, serve, trim
from orchestrator.bench.peft_peer import one_line
from orchestrator.bench.report import meta, number
from orchestrator.bench.steps import summarize, time_interleaved, torch_threads
from orchestrator.bench.workload import DEFAULT_MODEL, Contender, Workload, make_batch, train_step

DEFAULT_OUTPUT = "reports/bench/dynamic.json"
TASK = "superglue/rte"
MODELS: dict[str, dict[str, Any]] = {
    "minilm": {"arch": "bert", "packaged": DEFAULT_MODEL, "hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536, "vocab": 30522},
    "deberta-v3-xsmall-rand": {"arch": "deberta-v2", "hidden": 384, "layers": 12, "heads": 6, "intermediate": 1536, "vocab": 128100},
    "t5-small-rand": {"arch": "t5", "hidden": 256, "layers": 4, "heads": 4, "intermediate": 704, "vocab": 8192},
}
SIZE_KEYS = ("hidden", "layers", "heads", "intermediate", "vocab")
ESTIMATORS = ("first_order", "mixture", "mixture_soft")
ROWS = ("prompt_tuning", *ESTIMATORS)  # the floor first: every ratio is to it
BASELINE = "prompt_tuning"
QUICK = {"repeats": 3, "warmup": 1, "batch": 8, "seq": 64, "placement_seeds": (0,), "placement_steps": 100}
FULL = {"repeats": 7, "warmup": 2, "batch": 16, "seq": 128, "placement_seeds": (0, 1, 2), "placement_steps": 400}
# the placement synthetic (placement_task): the tiny BERT's sizes, the prompt length, the input length, the batches
PLACEMENT_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                  "vocab_size": 100, "max_position_embeddings": 128}  # fmt: skip
PLACEMENT_L, PLACEMENT_SEQ, PLACEMENT_BATCH, PLACEMENT_TEST, PLACEMENT_LR = 4, 6, 32, 200, 0.03
PLACEMENT_THREADS = 1
PLACEMENT_CHANCE = 0.5
FIRST_ID = 3  # T5's random source ids start above its special ids (0, 1, 2)


@dataclass(frozen=True)
class DynWorkload:
    batch: int = 16
    seq: int = 128  # input tokens per row, every one real
    prompt_length: int = 16
    task: str = TASK
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ backbones


def model_spec(name: str, sizes: Optional[dict[str, int]] = None) -> dict[str, Any]:
    """The spec of a bench backbone: :data:`MODELS`' entry with ``sizes`` over it (a packaged
    model given sizes becomes a random one of its architecture)."""
    if name not in MODELS:
        raise ValueError(f"unknown dynamic bench model {name!r} (known: {', '.join(MODELS)})")
    bad = sorted(set(sizes or {}) - set(SIZE_KEYS))
    if bad:
        raise ValueError(f"unknown size {', '.join(bad)} (sizes: {', '.join(SIZE_KEYS)})")
    spec = {**MODELS[name], **{k: int(v) for k, v in (sizes or {}).items()}, "name": name}
    if sizes:
        spec.pop("packaged", None)
    return spec


def tiny_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The same architecture, tiny and random (a memory process's unmeasured priming step)."""
    out = {**spec, "hidden": 8 * spec["heads"], "intermediate": 16 * spec["heads"], "vocab": 512, "name": spec["name"] + "-tiny"}
    out.pop("packaged", None)
    return out


def build_backbone(spec: dict[str, Any], seed: int = 0):
    """A ptcore Backbone of a spec: the packaged model, else random weights from a config (seeded)."""
    if spec.get("packaged"):
        return load_backbone(spec["packaged"])
    import torch
    import transformers

    arch, h, heads = spec["arch"], spec["hidden"], spec["heads"]
    if arch == "t5":
        from ptcore.tiny import tiny_model, tiny_tokenizer  # deferred: transformers and tokenizers

        model = tiny_model("t5", seed=seed, vocab_size=spec["vocab"], hidden=h, layers=spec["layers"], heads=heads,
                           intermediate=spec["intermediate"])  # fmt: skip
        # the text kind reads the end token and the label words' ids; a small one does (ids below the model's vocabulary)
        return backbone_from_model(model, tiny_tokenizer(min(spec["vocab"], 512), "t5"), name=spec["name"])
    common = dict(vocab_size=spec["vocab"], hidden_size=h, num_hidden_layers=spec["layers"], num_attention_heads=heads,
                  intermediate_size=spec["intermediate"], max_position_embeddings=512)  # fmt: skip
    if arch == "bert":
        config = transformers.BertConfig(**common)
    elif arch == "deberta-v2":  # DeBERTa-v3: relative c2p + p2c attention, no absolute positions, no segments
        config = transformers.DebertaV2Config(
            **common, relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
            position_buckets=256, share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0, pad_token_id=0,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown architecture {arch!r} (bert, deberta-v2, t5)")
    torch.manual_seed(seed)
    return backbone_from_model(transformers.AutoModel.from_config(config), None, name=spec["name"])


def describe(spec: dict[str, Any], backbone) -> dict[str, Any]:
    """What the JSON says about a backbone: family, sizes, parameters, how it encodes positions."""
    c = backbone.config
    emb = getattr(backbone.model, "embeddings", None)
    positions = "relative-bucket" if c.model_type in ("t5", "mt5") else (
        "absolute" if getattr(emb, "position_embeddings", None) is not None else "relative")  # fmt: skip
    return {
        "family": family_of(c).name, "model_type": c.model_type, "spec": dict(spec), "source": backbone.source,
        "hidden": getattr(c, "hidden_size", None) or c.d_model, "layers": getattr(c, "num_hidden_layers", None) or c.num_layers,
        "positions": positions, "params": sum(p.numel() for p in {id(p): p for p in backbone.model.parameters()}.values()),
    }  # fmt: skip


# ------------------------------------------------------------------ rows


def row_options(row: str, prompt_length: int) -> tuple[str, dict[str, Any]]:
    """(method, options) of a row."""
    if row == BASELINE:
        return "prompt_tuning", {"prompt_length": prompt_length}
    if row in ESTIMATORS:
        return "dynamic", {"base": "shallow", "prompt_length": prompt_length, "position": "instance", "length": "none",
                           "pool_size": 1, "estimator": row}  # fmt: skip
    raise ValueError(f"unknown row {row!r} (rows: {', '.join(ROWS)})")


def text_batch(kind, backbone, wl: DynWorkload, device="cpu") -> dict[str, Any]:
    """T5, rank classification: ``batch`` sources of ``seq`` random ids (the last the end token),
    each paired with every label's target, laid out by the kind's ``collate`` as a run's batch."""
    import torch

    from ptcore.tasks.templates import label_targets  # deferred: beside the kind that reads it

    g = torch.Generator().manual_seed(wl.seed)
    vocab, eos = backbone.config.vocab_size, kind.eos
    targets = [kind.target_ids(w) for w in label_targets(kind.spec)]
    labels = torch.randint(0, len(targets), (wl.batch,), generator=g).tolist()
    features = [
        {"input_ids": torch.randint(FIRST_ID, vocab, (wl.seq - 1,), generator=g).tolist() + [eos], "targets": targets,
         "label": labels[i], "example_index": i}
        for i in range(wl.batch)
    ]  # fmt: skip
    batch = kind.collate(features, backbone.config.pad_token_id)
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def contender(row: str, backbone, wl: DynWorkload, device="cpu") -> Contender:
    """One row, built as a run builds it (module docstring); ``ConfigError``: ptcore refuses it."""
    from ptcore.model import build_model, check_run, count_params  # deferred: pulls torch (orchestrator.bench docstring)

    method, options = row_options(row, wl.prompt_length)
    text = family_of(backbone.config).generative
    cfg = make_run_config({"task": wl.task, "method": method, "method_args": dict(options), "seed": wl.seed,
                           "batch_size": wl.batch, "format": "text" if text else "head"})  # fmt: skip
    check_run(cfg, backbone.config)  # what a run says before its weights load
    bb = backbone.copy()  # each row its own: prompt methods freeze and hook the backbone they wrap
    model = build_model(cfg, bb).to(device)
    model.train()
    if text:
        batch = text_batch(model.kind, bb, wl, device)
    else:
        batch = make_batch(bb, Workload(batch=wl.batch, length=wl.seq, padding="none", task=wl.task, seed=wl.seed,
                                        prompt_length=wl.prompt_length), device)  # fmt: skip
    step = train_step(model, batch, cfg)
    trainable, total = count_params(model)
    info = {"method": method, "estimator": options.get("estimator"), "method_args": options, "format": cfg.format, "kernels": cfg.kernels}
    return Contender(row, "ptcore", step, model, int(batch["attention_mask"].sum()), trainable, total, None, info)


def refusal(e: BaseException) -> dict[str, str]:
    """A row ptcore refuses: ``{"unsupported": its one-line ConfigError}``; anything else an error."""
    if isinstance(e, ConfigError):
        lines = str(e).strip().splitlines()
        return {"unsupported": lines[0] if lines else type(e).__name__}
    return {"error": one_line(e)}


# ------------------------------------------------------------------ peak memory


def measure_row(spec: dict, row: str, wl: DynWorkload, device: str = "cpu", steps: int = 2, backbone=None,
                prime: bool = False) -> dict[str, Any]:  # fmt: skip
    """Peak memory of ``steps`` steps of one row, in this process (``prime``: one unmeasured step
    of the same row on a tiny model of the same architecture first)."""
    if prime:
        small = replace(wl, batch=2, seq=min(16, wl.seq), prompt_length=min(4, wl.prompt_length))
        _measure(build_backbone(tiny_spec(spec), wl.seed), row, small, device, 1)
        gc.collect()
        gc.freeze()  # the modules loaded so far are never garbage: the window's gc.collect() stays short (as memory.py)
    return _measure(backbone if backbone is not None else build_backbone(spec, wl.seed), row, wl, device, steps)


def _measure(backbone, row, wl, device, steps) -> dict[str, Any]:
    try:
        c = contender(row, backbone, wl, device)
    except Exception as e:
        return refusal(e)
    try:
        return measure_steps(c, device, steps)
    finally:
        del c
        trim(collect=False)


def measure_memory(spec: dict, row: str, wl: DynWorkload, device: str = "cpu", steps: int = 2, threads: Optional[int] = None,
                   isolate: bool = True, backbone=None, timeout_s: float = 900) -> dict[str, Any]:  # fmt: skip
    """One row's peak memory: alone in a fresh process (``isolate``), else here."""
    if not isolate:
        return measure_row(spec, row, wl, device, steps, backbone=backbone)
    request = {"spec": spec, "row": row, "workload": wl.to_dict(), "device": device, "steps": steps, "threads": threads}
    out = run_module("orchestrator.bench.dynamic", request, timeout_s)
    return out.get("result", {"error": out.get("error")})


def _main() -> None:
    serve(lambda req: measure_row(req["spec"], req["row"], DynWorkload(**req["workload"]), req["device"], int(req["steps"]), prime=True))


# ------------------------------------------------------------------ placement: does the gradient teach where


def placement_backbone(seed: int = 0, dropout: float = 0.0):
    """The placement synthetic's frozen encoder: a tiny random BERT (:data:`PLACEMENT_BERT`),
    its weights drawn after ``torch.manual_seed(seed)`` (as ``tests/methods/test_dynamic.py``'s
    ``tiny_backbone``)."""
    import torch
    from transformers import BertConfig, BertModel  # deferred: transformers loads only when it runs

    torch.manual_seed(seed)
    cfg = BertConfig(**PLACEMENT_BERT, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return backbone_from_model(BertModel(cfg), tokenizer=None)


def placement_task(estimator: str = "first_order", level: str = "instance", steps: int = 400, seed: int = 0,
                   threads: Optional[int] = PLACEMENT_THREADS, options: Optional[dict[str, Any]] = None) -> dict[str, Any]:  # fmt: skip
    """Train only dynamic prompting's position selector on the two-group synthetic (module
    docstring, *Placement*) and say whether it learned where to put the prompt.

    Two input groups (marker token 10 or 11 after [CLS]); the target output of a group is the
    frozen encoder's output with the prompt laid out at split 0 (group A) or l (group B).
    ``level``: ``instance`` (a choice per input) or ``task`` (one learned split for all);
    ``estimator``: the position gradient (``first_order``, ``mixture``, ``mixture_soft``).
    ``threads``: torch threads while it runs (restored after; None: as they are). ``options``:
    more of ``dynamic``'s options (e.g. the dpt preset's selector and temperature schedule).

    Returns ``accuracy`` (the share of the 200 test inputs whose chosen split is their group's;
    chance 0.5), ``mse`` (test MSE at the chosen splits), ``task_best_mse`` (the test MSE of the
    best single split for every input: a task-level choice's floor; no training), ``splits`` and
    ``groups`` (per test input) and the settings. Deterministic for a seed (same threads)."""
    with torch_threads(threads):
        return _placement(estimator, level, steps, seed, dict(options or {}))


def _placement(estimator: str, level: str, steps: int, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    import torch

    from ptcore.methods.common import gather_tokens, insert_prompt  # deferred: pulls torch
    from ptcore.methods.dynamic import DynamicConfig, DynamicEncoder  # deferred: pulls torch

    L, T = PLACEMENT_L, PLACEMENT_SEQ
    bb = placement_backbone(seed)
    torch.manual_seed(seed)
    enc = DynamicEncoder(bb, DynamicConfig(prompt_length=L, position=level, init="random", estimator=estimator, **options))
    with torch.no_grad():
        enc.pool.normal_(0, 1.0)
    enc.pool.requires_grad_(False)
    model = enc.backbone
    g = torch.Generator().manual_seed(seed)

    def arranged(ids, am, tt, split):  # the frozen encoder's output with the prompt at ``split`` (per row)
        n = len(ids)
        e, m, ty, idx = insert_prompt(model.get_input_embeddings()(ids), am, tt, enc.pool[0].expand(n, -1, -1), split)
        out = model(inputs_embeds=e, attention_mask=m, token_type_ids=ty, position_ids=enc.position_ids(n, T + L, "cpu"))
        return gather_tokens(out.last_hidden_state, idx)

    def data(n):
        ids = torch.randint(20, 100, (n, T), generator=g)
        ids[:, 0], ids[:, -1] = 1, 2
        grp = torch.arange(n) % 2
        ids[:, 1] = 10 + grp
        am, tt = torch.ones_like(ids), torch.zeros_like(ids)
        with torch.no_grad():
            target = arranged(ids, am, tt, grp * L)
        return ids, am, tt, grp, target

    test = data(PLACEMENT_TEST)
    opt = torch.optim.Adam([p for p in enc.parameters() if p.requires_grad], lr=PLACEMENT_LR)
    enc.train()
    for step in range(steps):
        enc.on_train_step(step, steps)
        ids, am, tt, grp, target = data(PLACEMENT_BATCH)
        loss = (enc(ids, am, tt) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    ids, am, tt, grp, target = test
    with torch.no_grad():
        mse = (enc(ids, am, tt) - target).pow(2).mean().item()
        split = enc.choose(enc.pooled_input(ids, am, tt), len(ids)).split
        fixed = [(arranged(ids, am, tt, torch.full((len(ids),), j)) - target).pow(2).mean().item() for j in range(L + 1)]
    return {
        "estimator": estimator, "level": level, "steps": steps, "seed": seed,
        "accuracy": (split == grp * L).float().mean().item(), "mse": mse, "task_best_mse": min(fixed),
        "splits": split.tolist(), "groups": grp.tolist(),
    }  # fmt: skip


def placement_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """The placement section's rows: label -> (estimator, more options). Each estimator at
    ``dynamic``'s defaults, then the two that run on this backbone with the dpt preset's
    selector and temperature schedule (the DP reference's: ``ptcore/methods/dynamic/preset.py``)."""
    dpt = get_preset("dpt").settings  # registered with the methods (ptcore.config imports them)
    reference = {k: dpt[k] for k in ("selector", "tau0", "tau_min", "anneal", "anneal_rate")}
    return {**{e: (e, {}) for e in ESTIMATORS},
            **{f"{e}, dpt selector + schedule": (e, reference) for e in ("first_order", "mixture")}}  # fmt: skip


def run_placement(estimators=None, seeds=(0, 1, 2), steps: int = 400, threads: Optional[int] = PLACEMENT_THREADS,
                  log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:  # fmt: skip
    """The bench's placement section: :func:`placement_task` (instance level) per row of
    :func:`placement_variants` (``estimators``: those labels, default all) and seed; per row the
    runs (accuracy, MSE, the best single split's MSE, how many test inputs of each group got
    each split) and their means over seeds. A run that raises is ``{"seed": s, "error": its
    line}`` and left out of the means."""
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    variants = placement_variants()
    for est in (estimators or variants):
        estimator, options = variants[est]
        runs = []
        for seed in seeds:
            say(f"placement: {est}, seed {seed}, {steps} steps ...")
            try:
                r = placement_task(estimator, "instance", steps, seed, threads, options)
            except Exception as e:
                runs.append({"seed": seed, "error": one_line(e)})
                continue
            counts = [[0] * (PLACEMENT_L + 1) for _ in range(2)]
            for j, grp in zip(r["splits"], r["groups"]):
                counts[grp][j] += 1
            runs.append({"seed": seed, "accuracy": r["accuracy"], "mse": r["mse"], "task_best_mse": r["task_best_mse"],
                         "split_counts": {"A": counts[0], "B": counts[1]}})  # fmt: skip
        ok = [r for r in runs if "error" not in r]
        mean = (lambda k: sum(r[k] for r in ok) / len(ok)) if ok else (lambda k: None)
        out[est] = {"estimator": estimator, "options": options, "runs": runs, "accuracy_mean": mean("accuracy"),
                    "mse_mean": mean("mse"), "task_best_mse_mean": mean("task_best_mse")}  # fmt: skip
    return {
        "task": "two input groups whose target is the frozen tiny random BERT's output with the prompt at split 0 (A) "
                "or split l (B); only the instance-level position selector trains (module docstring, Placement)",
        "level": "instance", "steps": steps, "seeds": list(seeds), "prompt_length": PLACEMENT_L, "batch": PLACEMENT_BATCH,
        "test_inputs": PLACEMENT_TEST, "lr": PLACEMENT_LR, "threads": threads, "chance": PLACEMENT_CHANCE,
        "backbone": {"arch": "bert", "random": True, "positions": "absolute", **PLACEMENT_BERT},
        "estimators": out, "wall_s": time.perf_counter() - t0,
    }  # fmt: skip


# ------------------------------------------------------------------ the bench


def run_dynamic(
    quick: bool = False,
    *,
    models: Optional[list[str]] = None,
    sizes: Optional[dict[str, int]] = None,
    rows: Optional[list[str]] = None,
    batch: Optional[int] = None,
    seq: Optional[int] = None,
    prompt_length: int = 16,
    repeats: Optional[int] = None,
    warmup: Optional[int] = None,
    device: str = "auto",
    threads: Optional[int] = None,
    memory: bool = True,
    memory_steps: int = 2,
    isolate_memory: bool = True,
    placement: bool = True,
    placement_seeds: Optional[list[int]] = None,
    placement_steps: Optional[int] = None,
    output: Optional[str | Path] = DEFAULT_OUTPUT,
    log: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Run the estimator rows (and, with ``placement``, the placement synthetic per estimator and
    seed); return the result dict (and write it as JSON to ``output``)."""
    settings = dict(locals())
    gc.collect()
    gc.freeze()  # what exists now (modules, the caller's objects) is never this bench's garbage: keep each gc.collect() short
    try:
        with torch_threads(threads):
            return _run(**settings)
    finally:
        gc.unfreeze()


def _run(quick, *, models, sizes, rows, batch, seq, prompt_length, repeats, warmup, device, threads, memory, memory_steps,
         isolate_memory, placement, placement_seeds, placement_steps, output, log) -> dict[str, Any]:  # fmt: skip
    import torch

    say = log or (lambda s: None)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    preset = QUICK if quick else FULL
    repeats = repeats or preset["repeats"]
    warmup = preset["warmup"] if warmup is None else warmup
    dev = resolve_device(device)
    wl = DynWorkload(batch=batch or preset["batch"], seq=seq or preset["seq"], prompt_length=prompt_length)
    if wl.batch < 1 or wl.seq < 3:
        raise ValueError(f"batch={wl.batch} must be at least 1 and seq={wl.seq} at least 3")
    p_seeds = [int(x) for x in (preset["placement_seeds"] if placement_seeds is None else placement_seeds)]
    p_steps = preset["placement_steps"] if placement_steps is None else int(placement_steps)
    if placement and (not p_seeds or p_steps < 1):
        raise ValueError(f"placement needs at least one seed (got {p_seeds}) and at least 1 step (got {p_steps})")
    names = list(models or MODELS)
    specs = {n: model_spec(n, sizes) for n in names}
    todo = list(rows or ROWS)
    bad = [r for r in todo if r not in ROWS]
    if bad:
        raise ValueError(f"unknown row {', '.join(bad)} (rows: {', '.join(ROWS)})")
    if BASELINE not in todo:
        todo.insert(0, BASELINE)  # every ratio is to it
    result: dict[str, Any] = {"workload": wl.to_dict(), "baseline": BASELINE}

    out_models: dict[str, dict] = {}
    out_rows: dict[str, dict] = {}
    for name in names:
        spec = specs[name]
        say(f"{name}: load ...")
        backbone = build_backbone(spec, wl.seed)
        out_models[name] = describe(spec, backbone)
        here: dict[str, dict] = {}
        contenders = []
        for row in todo:
            say(f"{name}: build {row} ...")
            try:
                contenders.append(contender(row, backbone, wl, dev))
                here[row] = {}
            except Exception as e:
                here[row] = refusal(e)
        say(f"{name}: timing {len(contenders)} rows: {warmup} warm-up + {repeats} interleaved rounds ...")
        times, errors = time_interleaved(contenders, warmup, repeats, dev, log=say)
        stats = summarize(contenders, times, errors, None, baseline=f"ptcore/{BASELINE}")
        for c in contenders:
            row = stats[c.key]
            if "ratio_to_finetune" in row:
                row["ratio_to_prompt_tuning"] = row.pop("ratio_to_finetune")
            here[c.name] = row
        del contenders
        gc.collect()
        gc.freeze()  # the backbone and the modules loaded by now: every collection in the memory windows skips them

        if memory:
            runnable = [r for r in todo if "step_ms" in here[r]]
            say(f"{name}: peak memory of {len(runnable)} rows ({'a fresh process each' if isolate_memory else 'in process'}) ...")
            for row in runnable:
                m = measure_memory(spec, row, wl, dev, memory_steps, torch.get_num_threads(), isolate_memory,
                                   backbone=None if isolate_memory else backbone)  # fmt: skip
                here[row]["peak_mb"] = m.get("peak_mb")
                here[row]["memory"] = {k: v for k, v in m.items() if k != "peak_mb"}
            floor = here.get(BASELINE, {}).get("peak_mb")
            for row in runnable:
                peak = here[row]["peak_mb"]
                here[row]["extra_mb"] = peak - floor if floor is not None and peak is not None else None
                here[row]["peak_ratio_to_prompt_tuning"] = peak / floor if floor and peak is not None else None
        del backbone
        gc.collect()
        out_rows[name] = here

    result["models"] = out_models
    result["rows"] = out_rows
    if placement:
        say(f"placement: {len(placement_variants())} rows x {len(p_seeds)} seeds x {p_steps} steps, {PLACEMENT_THREADS} thread ...")
        result["placement"] = run_placement(None, p_seeds, p_steps, PLACEMENT_THREADS, log=say)
    result["meta"] = meta(
        quick=quick, device=dev, task=wl.task, batch=wl.batch, seq=wl.seq, prompt_length=wl.prompt_length, repeats=repeats,
        warmup=warmup, memory=memory, memory_steps=memory_steps, isolate_memory=isolate_memory, sizes=dict(sizes or {}),
        wall_s=time.perf_counter() - t_start, load_avg_at_start=load_start,
        memory_method="orchestrator/bench/memory.py" if memory else None, placement=placement,
        placement_seeds=p_seeds if placement else None, placement_steps=p_steps if placement else None,
    )  # fmt: skip
    return finish(result, output)


# ------------------------------------------------------------------ the printed table


def _signed(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:+.1f}"


def dynamic_table(result: dict[str, Any]) -> str:
    """The rows per backbone, prompt tuning first, each estimator's step beside it; a row ptcore
    refuses says so, its reason numbered below the table."""
    from tabulate import tabulate

    m = result.get("meta", {})
    head = (
        f"dynamic bench ({m.get('task')}): batch {m.get('batch')} x {m.get('seq')} tokens, prompt length {m.get('prompt_length')}, "
        f"position: instance, {m.get('device')}, {m.get('torch_threads')} threads, {m.get('repeats')} interleaved rounds after "
        f"{m.get('warmup')} warm-up"
    )  # fmt: skip
    table_rows, notes = [], []
    for name, info in result.get("models", {}).items():
        text = "; text" if info.get("family") in ("t5", "decoder") else ""
        back = f"{name} ({info.get('positions')} positions{text})"
        for row, r in result.get("rows", {}).get(name, {}).items():
            what = "prompt_tuning" if row == BASELINE else f"dynamic, {row}"
            if "step_ms" not in r:
                notes.append(r.get("unsupported") or r.get("error") or "-")
                table_rows.append([back, what, f"{'unsupported' if 'unsupported' in r else 'error'} ({len(notes)})"] + [""] * 4)
                continue
            table_rows.append([
                back, what, f"{r['trainable_params']:,}",
                f"{number(r['step_ms'])} [{number(r.get('step_ms_min'))}-{number(r.get('step_ms_max'))}]",
                number(r.get("ratio_to_prompt_tuning"), 2), number(r.get("peak_mb"), 1), _signed(r.get("extra_mb")),
            ])  # fmt: skip
    table = tabulate(
        table_rows, headers=["backbone", "row", "trainable", "step ms median [min-max]", "x prompt_tuning", "peak MB", "extra MB"],
        tablefmt="github", disable_numparse=True,
    )  # fmt: skip
    parts = [head, table]
    if notes:
        parts.append("\n".join(f"({i}) {why}" for i, why in enumerate(notes, 1)))
    if result.get("placement"):
        parts.append(placement_table(result["placement"]))
    parts.append(f"total wall {number(m.get('wall_s'))} s")
    if m.get("warning"):
        parts.append(f"warning: {m['warning']}")
    return "\n\n".join(parts)


def placement_table(placement: dict[str, Any]) -> str:
    """The placement section as markdown: per estimator the accuracy of the chosen split (mean
    of seeds), each seed's, and the test MSE (mean [each seed's]); the best single split's MSE
    below (a task-level choice's floor)."""
    from tabulate import tabulate

    p = placement
    chance = p.get("chance", PLACEMENT_CHANCE)
    head = (
        f"placement (module docstring): does the estimator's gradient teach the selector where the prompt goes? "
        f"Tiny random BERT (absolute positions; not evidence about T5), prompt length {p.get('prompt_length')}, "
        f"position: {p.get('level')}, {p.get('steps')} steps; seeds {', '.join(str(s) for s in p.get('seeds', []))}; "
        f"{p.get('threads')} torch thread(s)"
    )  # fmt: skip
    rows, floors = [], []
    for est, e in p.get("estimators", {}).items():
        runs = e.get("runs", [])
        per_acc = ", ".join(number(r["accuracy"], 3) if "error" not in r else "error" for r in runs)
        per_mse = ", ".join(number(r["mse"], 3) if "error" not in r else "error" for r in runs)
        rows.append([est, number(e.get("accuracy_mean"), 3), per_acc, f"{number(e.get('mse_mean'), 3)} [{per_mse}]"])
        if e.get("task_best_mse_mean") is not None:
            floors.append(e["task_best_mse_mean"])
    table = tabulate(
        rows, headers=["estimator", f"placement accuracy (mean of seeds; chance {chance:g})", "per seed", "test MSE (mean [per seed])"],
        tablefmt="github", disable_numparse=True,
    )  # fmt: skip
    parts = [head, table]
    if floors:  # the same seeds' backbone, prompt and test inputs under every estimator: one figure, else their range
        floor = number(floors[0], 3) if max(floors) - min(floors) < 1e-9 else f"{number(min(floors), 3)}-{number(max(floors), 3)}"
        parts.append(f"one split for every input (a task-level choice at best): accuracy {chance:g}, test MSE {floor} "
                     f"(mean of seeds); every input at its group's split: MSE 0")  # fmt: skip
    errors = [f"{est}, seed {r['seed']}: {r['error']}" for est, e in p.get("estimators", {}).items() for r in e.get("runs", []) if "error" in r]
    if errors:
        parts.append("\n".join(errors))
    return "\n\n".join(parts)


if __name__ == "__main__":
    _main()
