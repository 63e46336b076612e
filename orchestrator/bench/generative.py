"""``orchestrate bench --generative``: the generative families' methods beside PEFT's, step by step.

Rows per backbone family x method: ptcore's ``finetune``, ``lora``, ``prompt_tuning`` and
``ptuning_v2`` (every layer, every attention site) on a decoder LM and on T5, each beside its
PEFT peer on the same model and batch (``lora``; ``prompt_tuning``; ``prefix_tuning`` beside
P-Tuning v2). ``dynamic`` does not run on these families.

* **Backbones** — small random models built from configs (:data:`MODELS`, no download; the
  configs of ``ptcore.tiny``, so their special ids are the tiny checkpoints'):
  ``gpt2-small`` (GPT-2, 256 wide, 4 layers, 4 heads), ``llama-small`` (Llama, 256 wide, 4
  layers, 4 query / 2 key-value heads, FFN 704) and ``t5-small-rand`` (T5 v1.1, 256 wide,
  4 + 4 layers, 4 heads of 64, gated-GELU FFN 704), vocabulary 8192. ``sizes`` overrides
  them all (``hidden``, ``layers``, ``heads``, ``kv_heads``, ``intermediate``, ``vocab``).
* **Batch** (:class:`GenWorkload`) — ``batch`` rows of random token ids (special ids left
  out): a source of ``source`` tokens (``padding="mixed"``: uniform in ``[source/2, source]``,
  one row full) and a target of ``target`` tokens ending with the end token, laid out as
  ptcore's text kinds collate them: a decoder LM's row is source + target, left-padded, with
  ``target_mask``; T5 reads the right-padded sources as ``input_ids`` and the targets as
  ``labels`` (``rows`` = each target's source).
* **Step** — teacher-forced LM training as ptcore's loop runs ``Generation``: the method's
  runner gives the target tokens' log-probabilities (``runner.target_logprobs``), the loss is
  their negative sum over the target-token count; ``zero_grad``, backward, clipping, AdamW
  (ptcore's ``make_optimizer``) and the scheduler, then ``loss.item()``. ptcore's rows run
  ptcore's kernels (``kernels="fast"``, as a run does: its dropout); PEFT's rows run its
  ``PeftModel`` (``task_type`` ``CAUSAL_LM`` / ``SEQ_2_SEQ_LM``; prompt length and LoRA
  settings the same as ptcore's; T5 prompt tuning with ``num_transformer_submodules=1``,
  as ptcore and Lester et al.: PEFT's default of 2 allocates a second prompt the encoder-side
  prompt tuning never reads) and computes the same loss from its logits, the same way.
  A method PEFT refuses is ``{"unsupported": reason}``.
* **Timing** (``steps.py``): warm-up, then interleaved rounds, per backbone; step time
  median [min–max], the ratio to ptcore's fine-tuning of that backbone (paired per round).
* **Peak memory** (``memory.py``'s window: CUDA ``max_memory_allocated``; CPU weights + RSS
  growth): each row in a fresh ``python -m orchestrator.bench.generative`` process, after one
  unmeasured priming step of the same method on a tiny model of the same architecture.
* **FLOPs** (``genflops.py``, whose docstring holds the convention): useful FLOPs of the
  step over real tokens; MFU = that / median step time / the measured matmul peak.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from ptcore.backbones import backbone_from_model
from ptcore.config import make_run_config
from ptcore.families import family_of
from ptcore.methods import get_method
from ptcore.tasks.kinds import pad
from ptcore.tasks.text_kinds import left_pad
from ptcore.tiny import tiny_model

from orchestrator.bench import finish, resolve_device
from orchestrator.bench.genflops import GenDims, GenPlan, plan_dict, plan_for, step_flops
from orchestrator.bench.memory import measure_steps, run_module, serve, trim
from orchestrator.bench.peak import matmul_peak_gflops
from orchestrator.bench.peft_peer import Unsupported, one_line, peft_version
from orchestrator.bench.report import meta, number
from orchestrator.bench.steps import summarize, time_interleaved, torch_threads
from orchestrator.bench.workload import STEPS, Contender, row_lengths

DEFAULT_OUTPUT = "reports/bench/generative.json"
MODELS: dict[str, dict[str, Any]] = {
    "gpt2-small": {"arch": "gpt2", "hidden": 256, "layers": 4, "heads": 4, "vocab": 8192},
    "llama-small": {"arch": "llama", "hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2, "intermediate": 704, "vocab": 8192},
    "t5-small-rand": {"arch": "t5", "hidden": 256, "layers": 4, "heads": 4, "intermediate": 704, "vocab": 8192},
}
SIZE_KEYS = ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")
METHODS = ("finetune", "lora", "prompt_tuning", "ptuning_v2")
PEERS = {"lora": "lora", "prompt_tuning": "prompt_tuning", "ptuning_v2": "prefix_tuning"}  # ptcore method -> its PEFT peer
LORA = {"r": 8, "alpha": 16.0, "dropout": 0.1}  # ptcore's LoRA defaults; the peer gets the same
QUICK = {"repeats": 3, "warmup": 1, "batch": 4, "source": 48, "target": 8, "peak_sizes": (2048,), "peak_repeats": 3}
FULL = {"repeats": 7, "warmup": 2, "batch": 8, "source": 96, "target": 8, "peak_sizes": (1024, 2048, 3072), "peak_repeats": 5}
FIRST_ID = 3  # random token ids start above the special ids (0, 1; T5: 0, 1, 2)


@dataclass(frozen=True)
class GenWorkload:
    batch: int = 8
    source: int = 96  # source tokens per row (the longest, with padding "mixed")
    target: int = 8  # target tokens per row, the end token included
    padding: str = "mixed"  # none | mixed
    prompt_length: int = 16
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ backbones


def model_spec(name: str, sizes: Optional[dict[str, int]] = None) -> dict[str, Any]:
    """The spec of a bench backbone: :data:`MODELS`' entry with ``sizes`` over it."""
    if name not in MODELS:
        raise ValueError(f"unknown generative bench model {name!r} (known: {', '.join(MODELS)})")
    bad = sorted(set(sizes or {}) - set(SIZE_KEYS))
    if bad:
        raise ValueError(f"unknown size {', '.join(bad)} (sizes: {', '.join(SIZE_KEYS)})")
    spec = {**MODELS[name], **{k: int(v) for k, v in (sizes or {}).items()}, "name": name}
    if spec["arch"] in ("gpt2", "t5"):
        spec.pop("kv_heads", None)  # every query head has its own keys and values
    return spec


def build_model(spec: dict[str, Any], seed: int = 0):
    """The random transformers model of a spec (seeded: the same spec and seed, the same weights)."""
    return tiny_model(spec["arch"], seed=seed, vocab_size=spec["vocab"], hidden=spec["hidden"], layers=spec["layers"],
                      heads=spec["heads"], intermediate=spec.get("intermediate"), kv_heads=spec.get("kv_heads"))  # fmt: skip


def build_backbone(spec: dict[str, Any], seed: int = 0):
    return backbone_from_model(build_model(spec, seed), None, name=spec["name"])


def describe(spec: dict[str, Any], model) -> dict[str, Any]:
    """What the JSON says about a backbone: the family, the config's sizes, the parameter count."""
    d = GenDims.from_config(model.config)
    return {
        "family": family_of(model.config).name, "model_type": model.config.model_type, "spec": dict(spec),
        "config": {"hidden": d.hidden, "layers": d.layers, "decoder_layers": d.decoder_layers or None, "q_dim": d.q_dim,
                   "kv_dim": d.kv_dim, "intermediate": d.intermediate, "gated_ffn": d.gated, "vocab": d.vocab},
        "params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "matrix_params": d.params(),
    }  # fmt: skip


def tiny_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The same architecture, tiny (a process's unmeasured priming step)."""
    return {**spec, "hidden": 8 * spec["heads"], "intermediate": 16 * spec["heads"], "vocab": 512, "name": spec["name"] + "-tiny"}


# ------------------------------------------------------------------ batch


def make_batch(config, wl: GenWorkload, device="cpu") -> dict[str, Any]:
    """The synthetic text batch (see the module docstring). ``sources`` / ``targets``: the real
    tokens of each row, for the FLOP count."""
    import torch

    g = torch.Generator().manual_seed(wl.seed)
    b, s, t = wl.batch, wl.source, wl.target
    if s < 1 or t < 1:
        raise ValueError(f"source={s} and target={t} must both be at least 1")
    lengths = row_lengths(wl.padding, b, s, 1, g)
    vocab, eos, pad_id = config.vocab_size, config.eos_token_id, config.pad_token_id
    sources = [torch.randint(FIRST_ID, vocab, (int(n),), generator=g).tolist() for n in lengths]
    targets = [torch.randint(FIRST_ID, vocab, (t - 1,), generator=g).tolist() + [eos] for _ in range(b)]
    if config.is_encoder_decoder:  # T5: sources (ending with the end token) and targets apart
        sources = [x[:-1] + [eos] for x in sources]
        labels = pad(targets, -100)
        batch = {
            "input_ids": pad(sources, pad_id), "attention_mask": pad([[1] * len(x) for x in sources], 0),
            "labels": labels, "rows": torch.arange(b),
            "decoder_input_ids": torch.cat([torch.full((b, 1), config.decoder_start_token_id), labels[:, :-1].masked_fill(labels[:, :-1] < 0, pad_id)], 1),  # T5's _shift_right
        }  # fmt: skip
    else:  # a decoder LM: source + target in one row, left-padded
        joined = [x + y for x, y in zip(sources, targets)]
        batch = {
            "input_ids": left_pad(joined, pad_id), "attention_mask": left_pad([[1] * len(j) for j in joined], 0),
            "target_mask": left_pad([[0] * len(x) + [1] * len(y) for x, y in zip(sources, targets)], 0),
        }  # fmt: skip
    out = {k: v.to(device) for k, v in batch.items()}
    out["sources"], out["targets"] = [len(x) for x in sources], [len(y) for y in targets]
    return out


def token_logprobs(logits, batch: dict) -> Any:
    """log p of every target token from a model's logits, as ptcore's runners compute it
    (``DecoderRunner`` / ``T5Runner.target_logprobs``): (M, T-1) or (M, Tl), 0 off the targets."""
    import torch

    if "labels" in batch:
        labels = batch["labels"]
        logp = torch.log_softmax(logits[:, -labels.shape[1]:].float(), dim=-1)
        return logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels >= 0).to(torch.float32)
    ids = batch["input_ids"]
    logp = torch.log_softmax(logits[:, -ids.shape[1]:][:, :-1].float(), dim=-1)  # a soft prompt's positions dropped
    return logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * batch["target_mask"][:, 1:].to(torch.float32)


def lm_loss(logprobs, batch: dict):
    """``Generation.loss``: the target tokens' negative log-likelihood, averaged over them."""
    count = (batch["labels"] >= 0).sum() if "labels" in batch else batch["target_mask"][:, 1:].sum()
    return -logprobs.sum() / count.clamp(min=1).to(logprobs.dtype)


# ------------------------------------------------------------------ contenders


def method_options(method: str, prompt_length: int) -> dict[str, Any]:
    if method in ("prompt_tuning", "ptuning_v2"):
        return {"prompt_length": prompt_length}
    if method == "lora":
        return dict(LORA)
    return {}


def _trainer(model, lr: float, weight_decay: float, warmup_ratio: float, max_grad_norm: float, forward: Callable[[], Any],
             before: Optional[Callable[[int], None]] = None) -> Callable[[], float]:  # fmt: skip
    """One training step of ``model`` (ptcore's optimizer and order; see the module docstring)."""
    import torch

    from ptcore.train import make_optimizer  # deferred: pulls torch (orchestrator.bench docstring)

    params, optimizer, scheduler = make_optimizer(model, lr, weight_decay, warmup_ratio, STEPS)
    state = {"step": 0}

    def step() -> float:
        if before is not None:
            before(state["step"])
        loss = forward()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        return loss.item()

    return step


def _flops(model_config, batch, plan: GenPlan) -> dict[str, float]:
    return step_flops(GenDims.from_config(model_config), batch["sources"], batch["targets"], plan)


def ptcore_contender(method: str, backbone, wl: GenWorkload, device="cpu", kernels: str = "fast") -> Contender:
    """ptcore's ``method`` on its own copy of the backbone, trained through the family's runner."""
    import torch

    from ptcore.kernels import install  # deferred: pulls torch (orchestrator.bench docstring)
    from ptcore.methods.lora.model import default_targets  # deferred: pulls torch (orchestrator.bench docstring)
    from ptcore.model import count_params  # deferred: pulls torch (orchestrator.bench docstring)

    options = method_options(method, wl.prompt_length)
    cfg = make_run_config({"task": "qa/squad", "format": "text", "method": method, "method_args": options, "seed": wl.seed,
                           "batch_size": wl.batch, "kernels": kernels})  # fmt: skip
    bb = backbone.copy()  # each contender its own: methods freeze, hook or rewrite the backbone they wrap
    torch.manual_seed(wl.seed)
    encoder = get_method(method).encoder_cls(bb, cfg.method_args)
    install(encoder, cfg.kernels, bb.model)
    encoder.to(device).train()
    batch = make_batch(bb.config, wl, device)
    runner = encoder.runner
    step = _trainer(encoder, cfg.resolved()["lr"], cfg.weight_decay, cfg.warmup_ratio, cfg.max_grad_norm,
                    lambda: lm_loss(runner.target_logprobs(batch), batch), lambda s: encoder.on_train_step(s, STEPS))  # fmt: skip
    arch = "t5" if bb.config.is_encoder_decoder else "decoder"
    targets = default_targets(bb.config) if method == "lora" else ()
    plan = plan_for("ptcore", method, arch, wl.prompt_length, LORA["r"], targets)
    trainable, total = count_params(encoder)
    return Contender(
        method, "ptcore", step, encoder, sum(batch["sources"]) + sum(batch["targets"]), trainable, total, _flops(bb.config, batch, plan),
        {"impl": "ptcore", "method": method, "options": options, "kernels": cfg.kernels, "flop_plan": plan_dict(plan),
         "target_tokens_per_step": sum(batch["targets"])},
    )  # fmt: skip


def peer_config(peft, peer: str, seq2seq: bool, prompt_length: int):
    """PEFT's config of ``peer`` (task type set)."""
    task = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    if peer == "lora":
        return peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], task_type=task)
    if peer == "prompt_tuning":
        extra = {"num_transformer_submodules": 1} if seq2seq else {}  # the encoder's prompt only (module docstring)
        return peft.PromptTuningConfig(num_virtual_tokens=prompt_length, task_type=task, **extra)
    if peer == "prefix_tuning":
        return peft.PrefixTuningConfig(num_virtual_tokens=prompt_length, task_type=task)
    raise Unsupported(f"no generative PEFT peer named {peer!r} (known: {', '.join(PEERS.values())})")


def peft_contender(peer: str, backbone, wl: GenWorkload, device="cpu", check: bool = True) -> Contender:
    """PEFT's ``peer`` on a copy of the backbone; :class:`Unsupported` with a one-line reason
    when PEFT is missing or refuses. ``check`` runs one step now (see ``peft_peer.py``)."""
    try:
        import peft
    except ImportError:
        raise Unsupported("peft is not installed (pip install 'ptcore[bench]')") from None

    from ptcore.model import count_params  # deferred: pulls torch (orchestrator.bench docstring)

    seq2seq = bool(backbone.config.is_encoder_decoder)
    try:
        pconf = peer_config(peft, peer, seq2seq, wl.prompt_length)
        model = peft.get_peft_model(copy.deepcopy(backbone.model), pconf).to(device)
        model.train()
        batch = make_batch(backbone.config, wl, device)
        if seq2seq:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
        else:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        step = _trainer(model, 1e-3, 0.01, 0.06, 1.0, lambda: lm_loss(token_logprobs(model(**inputs, use_cache=False).logits, batch), batch))
        if check:
            step()
    except Unsupported:
        raise
    except Exception as e:
        raise Unsupported(one_line(e)) from None
    targets = sorted(pconf.target_modules) if peer == "lora" else ()
    plan = plan_for("peft", peer, "t5" if seq2seq else "decoder", wl.prompt_length, LORA["r"], targets)
    trainable, total = count_params(model)
    options = {k: v for k, v in pconf.to_dict().items() if k in ("num_virtual_tokens", "num_transformer_submodules", "r", "lora_alpha",
                                                                   "lora_dropout", "target_modules")}  # fmt: skip
    if isinstance(options.get("target_modules"), (set, frozenset)):
        options["target_modules"] = sorted(options["target_modules"])
    return Contender(
        peer, "peft", step, model, sum(batch["sources"]) + sum(batch["targets"]), trainable, total, _flops(backbone.config, batch, plan),
        {"impl": "peft", "method": peer, "peft_type": str(pconf.peft_type.value if hasattr(pconf.peft_type, "value") else pconf.peft_type),
         "options": options, "peft_reported_trainable": int(model.get_nb_trainable_parameters()[0]), "flop_plan": plan_dict(plan),
         "target_tokens_per_step": sum(batch["targets"])},
    )  # fmt: skip


def jobs(peft: bool = True, methods: Optional[list[str]] = None) -> list[dict[str, str]]:
    """ptcore's methods, each followed by its PEFT peer."""
    out = []
    for m in methods or METHODS:
        if m not in METHODS:
            raise ValueError(f"method {m!r} is not benched on the generative families (benched: {', '.join(METHODS)})")
        out.append({"impl": "ptcore", "method": m})
        if peft and m in PEERS:
            out.append({"impl": "peft", "method": PEERS[m]})
    return out


def build(job: dict[str, str], backbone, wl: GenWorkload, device="cpu", kernels: str = "fast", check: bool = True) -> Contender:
    if job["impl"] == "peft":
        return peft_contender(job["method"], backbone, wl, device, check=check)
    return ptcore_contender(job["method"], backbone, wl, device, kernels)


def _key(job: dict[str, str]) -> str:
    return f"{job['impl']}/{job['method']}"


# ------------------------------------------------------------------ peak memory


def measure_job(spec: dict, job: dict, wl: GenWorkload, device: str = "cpu", steps: int = 2, kernels: str = "fast",
                backbone=None, prime: bool = False) -> dict[str, Any]:  # fmt: skip
    """Peak memory of ``steps`` steps of one row, in this process (``prime``: one unmeasured
    step of the same job on a tiny model of the same architecture first)."""
    if prime:
        small = replace(wl, batch=2, source=min(8, wl.source), target=min(2, wl.target), prompt_length=min(2, wl.prompt_length))
        _measure(build_backbone(tiny_spec(spec), wl.seed), job, small, device, 1, kernels)
    return _measure(backbone if backbone is not None else build_backbone(spec, wl.seed), job, wl, device, steps, kernels)


def _measure(backbone, job, wl, device, steps, kernels) -> dict[str, Any]:
    try:
        c = build(job, backbone, wl, device, kernels, check=False)
    except Unsupported as e:
        return {"unsupported": str(e)}
    except Exception as e:
        return {"error": one_line(e)}
    try:
        return measure_steps(c, device, steps, peer=job["impl"] == "peft")
    finally:
        del c
        trim(collect=False)


def measure_memory(spec: dict, job: dict, wl: GenWorkload, device: str = "cpu", steps: int = 2, threads: Optional[int] = None,
                   kernels: str = "fast", isolate: bool = True, backbone=None, timeout_s: float = 900) -> dict[str, Any]:  # fmt: skip
    """One row's peak memory: alone in a fresh process (``isolate``), else here."""
    if not isolate:
        return measure_job(spec, job, wl, device, steps, kernels, backbone=backbone)
    request = {"spec": spec, "job": job, "workload": wl.to_dict(), "device": device, "steps": steps, "threads": threads, "kernels": kernels}
    out = run_module("orchestrator.bench.generative", request, timeout_s)
    return out.get("result", {"error": out.get("error")})


def _main() -> None:
    serve(lambda req: measure_job(req["spec"], req["job"], GenWorkload(**req["workload"]), req["device"], int(req["steps"]),
                                  req["kernels"], prime=True))


# ------------------------------------------------------------------ the bench


def run_generative(
    quick: bool = False,
    *,
    models: Optional[list[str]] = None,
    sizes: Optional[dict[str, int]] = None,
    methods: Optional[list[str]] = None,
    batch: Optional[int] = None,
    source: Optional[int] = None,
    target: Optional[int] = None,
    padding: str = "mixed",
    prompt_length: int = 16,
    repeats: Optional[int] = None,
    warmup: Optional[int] = None,
    device: str = "auto",
    threads: Optional[int] = None,
    peft: bool = True,
    memory: bool = True,
    memory_steps: int = 2,
    isolate_memory: bool = True,
    kernels: str = "fast",
    peak_sizes: Optional[tuple[int, ...]] = None,
    output: Optional[str | Path] = DEFAULT_OUTPUT,
    log: Optional[Callable[[str], None]] = None,
) -> dict[str, Any]:
    """Run the generative rows; return the result dict (and write it as JSON to ``output``)."""
    settings = dict(locals())
    with torch_threads(threads):
        return _run(**settings)


def _run(quick, *, models, sizes, methods, batch, source, target, padding, prompt_length, repeats, warmup, device, threads, peft,
         memory, memory_steps, isolate_memory, kernels, peak_sizes, output, log) -> dict[str, Any]:  # fmt: skip
    import torch

    say = log or (lambda s: None)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    preset = QUICK if quick else FULL
    repeats = repeats or preset["repeats"]
    warmup = preset["warmup"] if warmup is None else warmup
    dev = resolve_device(device)
    wl = GenWorkload(batch=batch or preset["batch"], source=source or preset["source"], target=target or preset["target"],
                     padding=padding, prompt_length=prompt_length)  # fmt: skip
    names = list(models or MODELS)
    specs = {n: model_spec(n, sizes) for n in names}
    todo = jobs(peft, methods)
    result: dict[str, Any] = {"workload": wl.to_dict()}

    say("matmul peak ...")
    peak = matmul_peak_gflops(peak_sizes or preset["peak_sizes"], preset["peak_repeats"], dev)
    result["matmul_peak_gflops"] = peak["gflops"]
    result["matmul_peak"] = peak

    out_models: dict[str, dict] = {}
    out_ptcore: dict[str, dict] = {}
    out_peft: dict[str, dict] = {}
    for name in names:
        spec = specs[name]
        backbone = build_backbone(spec, wl.seed)
        out_models[name] = describe(spec, backbone.model)
        rows: dict[str, dict] = {}
        contenders = []
        for job in todo:
            say(f"{name}: build {_key(job)} ...")
            try:
                contenders.append(build(job, backbone, wl, dev, kernels))
                rows[_key(job)] = {}
            except Unsupported as e:
                rows[_key(job)] = {"unsupported": str(e)}
            except Exception as e:
                rows[_key(job)] = {"unsupported" if job["impl"] == "peft" else "error": one_line(e)}
        say(f"{name}: timing {len(contenders)} rows: {warmup} warm-up + {repeats} interleaved rounds ...")
        times, errors = time_interleaved(contenders, warmup, repeats, dev, log=say)
        stats = summarize(contenders, times, errors, peak["gflops"])
        for c in contenders:
            row = stats[c.key]
            if c.family == "peft" and "error" in row:
                row = {"unsupported": row["error"]}
            if "achieved_gflops" in row:
                row["achieved_tflops"] = row["achieved_gflops"] / 1e3
            rows[c.key] = row
        del contenders
        gc.collect()

        if memory:
            runnable = [j for j in todo if "step_ms" in rows[_key(j)]]
            say(f"{name}: peak memory of {len(runnable)} rows ({'a fresh process each' if isolate_memory else 'in process'}) ...")
            ft = None
            for job in runnable:
                m = measure_memory(spec, job, wl, dev, memory_steps, torch.get_num_threads(), kernels, isolate_memory,
                                   backbone=None if isolate_memory else backbone)  # fmt: skip
                row = rows[_key(job)]
                if "peak_mb" in m:
                    row["peak_mb"] = m["peak_mb"]
                    row["memory"] = {k: v for k, v in m.items() if k != "peak_mb"}
                    if _key(job) == "ptcore/finetune":
                        ft = m["peak_mb"]
                else:
                    row["peak_mb"] = None
                    row["memory"] = m
            for job in runnable:
                row = rows[_key(job)]
                row["peak_ratio_to_finetune"] = row["peak_mb"] / ft if ft and row.get("peak_mb") else None
        del backbone
        gc.collect()
        out_ptcore[name] = {k.split("/", 1)[1]: v for k, v in rows.items() if k.startswith("ptcore/")}
        out_peft[name] = {k.split("/", 1)[1]: v for k, v in rows.items() if k.startswith("peft/")}

    result["models"] = out_models
    result["ptcore"] = out_ptcore
    result["peft"] = out_peft
    result["peers"] = {m: PEERS[m] for m in (methods or METHODS) if m in PEERS}
    result["meta"] = meta(
        quick=quick, device=dev, batch=wl.batch, source=wl.source, target=wl.target, padding=wl.padding, repeats=repeats,
        warmup=warmup, prompt_length=wl.prompt_length, memory_steps=memory_steps, kernels=kernels, sizes=dict(sizes or {}),
        peft_installed=peft_version() is not None, wall_s=time.perf_counter() - t_start, load_avg_at_start=load_start,
        flop_convention="orchestrator/bench/genflops.py", memory_method="orchestrator/bench/memory.py",
    )  # fmt: skip
    return finish(result, output)


# ------------------------------------------------------------------ the printed table


def _g(v: Any) -> str:
    """Three significant digits (FLOP figures span tiny test models to real ones)."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def generative_table(result: dict[str, Any]) -> str:
    """The rows, each ptcore method followed by its PEFT peer, per backbone."""
    from tabulate import tabulate

    m = result.get("meta", {})
    head = (
        f"generative bench: batch {m.get('batch')} x (source <= {m.get('source')} + target {m.get('target')}) tokens "
        f"(padding {m.get('padding')}), prompt length {m.get('prompt_length')}, {m.get('device')}, {m.get('torch_threads')} threads, "
        f"{m.get('repeats')} interleaved rounds after {m.get('warmup')} warm-up; matmul peak {number(result.get('matmul_peak_gflops'))} GFLOP/s"
    )  # fmt: skip
    rows = []
    for name, info in result.get("models", {}).items():
        fam = f"{name} ({info.get('family')})"
        order = [("ptcore", mth) for mth in result.get("ptcore", {}).get(name, {})]
        order = [x for mth in order for x in [mth] + ([("peft", result["peers"][mth[1]])] if mth[1] in result.get("peers", {}) else [])]
        for impl, method in order:
            r = result.get(impl, {}).get(name, {}).get(method)
            if r is None:
                continue
            if "step_ms" not in r:
                rows.append([fam, method, impl, r.get("unsupported") or r.get("error") or "-"] + [""] * 7)
                continue
            rows.append([
                fam, method, impl, f"{r['trainable_params']:,}",
                f"{number(r['step_ms'])} [{number(r.get('step_ms_min'))}-{number(r.get('step_ms_max'))}]", number(r.get("ratio_to_finetune"), 2),
                number(r.get("peak_mb"), 1), str(r.get("tokens_per_step")), _g(r.get("gflop_per_step")),
                _g(r.get("achieved_tflops")), _g(r.get("mfu") * 100 if r.get("mfu") is not None else None),
            ])  # fmt: skip
    table = tabulate(
        rows, headers=["family", "method", "impl", "trainable", "step ms median [min-max]", "x ft", "peak MB", "real tok/step",
                       "GFLOP/step", "TFLOP/s", "MFU %"], tablefmt="github", disable_numparse=True,
    )  # fmt: skip
    parts = [head, table, f"total wall {number(m.get('wall_s'))} s"]
    if m.get("warning"):
        parts.append(f"warning: {m['warning']}")
    return "\n\n".join(parts)


if __name__ == "__main__":
    _main()
