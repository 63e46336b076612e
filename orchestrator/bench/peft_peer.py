"""The peer: Hugging Face PEFT methods on the same backbone, batch and training step.

Each PEFT method wraps ``AutoModelForSequenceClassification`` built from the backbone's config
with the backbone's weights copied in (PEFT's usual entry point: [CLS] pooler + linear head),
``task_type="SEQ_CLS"``. Prompt-style peers use the same prompt length as ptcore's methods.
A method PEFT refuses on this backbone / transformers version (e.g. prefix tuning: "Model does
not support past key values" under transformers 5) is recorded as ``{"unsupported": reason}``.
"""

from __future__ import annotations

from typing import Any, Callable

from orchestrator.bench.workload import STEPS, Contender, make_batch

# name -> builder(peft module, hidden size, prompt length) -> PeftConfig (task_type is set by the caller)
PEERS: dict[str, Callable[[Any, int, int], Any]] = {
    "prefix_tuning": lambda peft, h, l: peft.PrefixTuningConfig(num_virtual_tokens=l),
    "prompt_tuning": lambda peft, h, l: peft.PromptTuningConfig(num_virtual_tokens=l),
    "p_tuning": lambda peft, h, l: peft.PromptEncoderConfig(num_virtual_tokens=l, encoder_hidden_size=h),
    "lora": lambda peft, h, l: peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]),
    "ia3": lambda peft, h, l: peft.IA3Config(),
    "loha": lambda peft, h, l: peft.LoHaConfig(r=8, target_modules=["query", "value"]),
    "lokr": lambda peft, h, l: peft.LoKrConfig(r=8, target_modules=["query", "value"]),
    "adalora": lambda peft, h, l: peft.AdaLoraConfig(target_modules=["query", "value"], total_step=10_000),
    "vera": lambda peft, h, l: peft.VeraConfig(r=8, target_modules=["query", "value"]),
    "fourierft": lambda peft, h, l: peft.FourierFTConfig(n_frequency=min(1000, h * h), target_modules=["query", "value"]),
    "oft": lambda peft, h, l: peft.OFTConfig(r=0, oft_block_size=8 if h % 8 == 0 else 1, target_modules=["query", "value"]),
    "boft": lambda peft, h, l: peft.BOFTConfig(boft_block_size=8 if h % 8 == 0 else 1, target_modules=["query", "value"]),
    "hra": lambda peft, h, l: peft.HRAConfig(target_modules=["query", "value"]),
    "ln_tuning": lambda peft, h, l: peft.LNTuningConfig(target_modules=["LayerNorm"]),
}
QUICK_PEERS = ("prefix_tuning", "prompt_tuning", "p_tuning", "lora", "ia3")


def peft_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("peft")
    except Exception:
        return None


def peer_jobs(quick: bool) -> list[dict[str, Any]]:
    names = QUICK_PEERS if quick else tuple(PEERS)
    return [{"name": n, "family": "peft", "peft": n} for n in names]


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class Unsupported(Exception):
    """A PEFT method that cannot run here; the message is the one-line reason."""


def peft_contender(name: str, peer: str, backbone, workload, device="cpu", check: bool = True):
    """A :class:`~orchestrator.bench.workload.Contender` for PEFT method ``peer``; raises
    :class:`Unsupported` with a one-line reason when PEFT is missing or refuses. ``check``
    runs one step now, so a method that builds but cannot train fails here (the memory
    measurement skips it: its window must see the optimizer state being allocated)."""
    try:
        import peft
    except ImportError:
        raise Unsupported("peft is not installed (pip install 'ptcore[bench]')") from None
    import torch
    from transformers import AutoModelForSequenceClassification

    from ptcore.model import count_params  # deferred: pulls torch (orchestrator.bench docstring)
    from ptcore.train import make_optimizer  # deferred: pulls torch (orchestrator.bench docstring)

    if peer not in PEERS:
        raise Unsupported(f"no PEFT peer named {peer!r} (known: {', '.join(PEERS)})")
    try:
        config = backbone.config.__class__.from_dict({**backbone.config.to_dict(), "num_labels": 2})
        torch.manual_seed(workload.seed)
        seq = AutoModelForSequenceClassification.from_config(config)
        getattr(seq, seq.base_model_prefix).load_state_dict(backbone.model.state_dict(), strict=False)
        pconf = PEERS[peer](peft, config.hidden_size, workload.prompt_length)
        pconf.task_type = "SEQ_CLS"
        model = peft.get_peft_model(seq, pconf).to(device)
        model.train()
        batch = make_batch(backbone, workload, device)
        params, optimizer, scheduler = make_optimizer(model, 1e-3, 0.01, 0.06, STEPS)  # ptcore's defaults
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        labels = batch["label"]

        def step() -> float:
            loss = model(**inputs, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            return loss.item()

        if check:
            step()
    except Unsupported:
        raise
    except Exception as e:
        raise Unsupported(one_line(e)) from None
    trainable, total = count_params(model)
    tokens = int(batch["attention_mask"].sum())
    return Contender(name, "peft", step, model, tokens, trainable, total, None, {"peft": peer, "peft_type": str(pconf.peft_type)})
