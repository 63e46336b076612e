"""Export a trained run to PEFT's adapter format: ``adapter_config.json`` + ``adapter_model.safetensors``,
which ``peft.PeftModel.from_pretrained(base_model, DIR)`` loads onto the run's backbone.

:func:`export_peft` takes a run directory (``<run>/checkpoint/``) or a checkpoint directory
(``trainable.safetensors`` + ``run_config.json``), rebuilds the model as
:func:`ptcore.checkpoint.load_checkpoint` does, and writes what PEFT needs, so PEFT's model
gives ptcore's logits (the tests compare them: ``tests/core/test_export.py``):

===============  =====================================  ===============================================
method           families                               PEFT form
===============  =====================================  ===============================================
prompt_tuning    decoder LMs, T5                        PROMPT_TUNING: the ``l`` prompt vectors
                                                        (T5: ``num_transformer_submodules=1``, the
                                                        encoder's prompt, as ptcore places it)
lora             decoder LMs, T5                        LORA: peft's own config and tensors, as
                                                        ptcore injected them (``base_model.model.``)
ptuning_v2       decoder LMs with rotary positions      PREFIX_TUNING: the per-layer keys/values,
                 (Llama, Mistral, Qwen2/3, Gemma)       keys pre-rotated by ``l`` positions
===============  =====================================  ===============================================

Refused, each in one line (:class:`~ptcore.errors.ConfigError`), before anything is written:

* a run of format ``head`` (a task head on hidden states; every encoder-family run): the head
  has no PEFT form;
* ``finetune`` (the whole backbone trained) and ``dynamic`` (prompts chosen per input by a
  selector network): no PEFT adapter form;
* ``ptuning_v2`` on T5: ptcore prompts the encoder's self-attention, the decoder's and the
  cross-attention; PEFT's prefix tuning reaches the decoder's self-attention only;
* ``ptuning_v2`` on GPT-2: PEFT counts the prefix as ``l`` past tokens, so the input's
  positions start at ``l`` (ptcore's at 0), and GPT-2's learned position embeddings make that
  another model. With rotary positions (Llama and the rest) the shift only rotates each query
  by ``l`` more against the (unrotated) prefix keys: keys rotated by ``l`` positions undo it
  exactly, which is what the export writes;
* ``ptuning_v2`` with a partial ``depth`` (PEFT prompts every layer), a run with ``layers``
  set (PEFT's base model is the whole checkpoint), LoRA with tensors PEFT's adapter does not
  carry (``train_layernorm``).

Padding: PEFT's forward numbers a left-padded row's positions by column (pads included),
ptcore its real tokens from 0 (:mod:`ptcore.families.decoder_run`); the two agree on rows
without padding, as the tests check.

Generation: with peft 0.21.2 and transformers 5.25, ``PeftModel.generate`` of a prefix-tuning
adapter (any, not only an exported one) runs without the prefix: it gives the tokens the base
model gives with the adapter disabled, while its forward gives the prefix's logits. Prompt
tuning and LoRA adapters generate as ptcore does.

The files are written to a temporary directory beside ``out_dir`` and renamed into place, so
an error leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from .backbones import resolve
from .checkpoint import CONFIG, WEIGHTS, load_checkpoint
from .config import RunConfig
from .errors import ConfigError
from .families import family_of
from .tasks.text_kinds import resolve_format

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
EXPORTABLE = ("prompt_tuning", "lora", "ptuning_v2")
# rotary embeddings whose cos/sin at position p are a pure rotation by p (times a fixed angle per
# dimension): R(p + l) = R(p)·R(l), so a prefix key rotated by l meets a query at p + l as the unrotated key
# meets the query at p. ("dynamic" changes its frequencies with the sequence length, "yarn" / "longrope"
# scale cos and sin: refused.)
ROPE_TYPES = ("default", "linear", "llama3")
NO_PEFT_FORM = {
    "finetune": "method finetune trains the whole backbone: it has no PEFT adapter form",
    "dynamic": "method dynamic chooses its prompts per input with a selector network: PEFT has no such adapter",
}


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory of a run directory (``<run>/checkpoint``) or the directory itself."""
    path = Path(path).expanduser()
    for cand in (path, path / "checkpoint"):
        if (cand / WEIGHTS).is_file() and (cand / CONFIG).is_file():
            return cand
    raise ConfigError(f"{path} is neither a run directory with checkpoint/ nor a checkpoint ({WEIGHTS} and {CONFIG}); "
                      f"give the --output directory of `orchestrate run` or its checkpoint/")  # fmt: skip


def _run_config(ckpt: Path) -> RunConfig:
    try:
        return RunConfig(**json.loads((ckpt / CONFIG).read_text()))
    except Exception as e:  # unreadable JSON or settings this version does not know
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{ckpt / CONFIG}: not a readable run config ({first[:160]})") from None


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} exists and is not an empty directory; choose a new --output")


def _refuse_early(cfg: RunConfig):
    """The refusals that need no weights: method, layers, the family and the run's format. -> family"""
    from transformers import AutoConfig

    if cfg.method in NO_PEFT_FORM:
        raise ConfigError(f"cannot export to PEFT: {NO_PEFT_FORM[cfg.method]}")
    if cfg.method not in EXPORTABLE:
        raise ConfigError(f"cannot export to PEFT: method {cfg.method} has no PEFT form (exportable: {', '.join(EXPORTABLE)})")
    if cfg.layers is not None:
        raise ConfigError(f"cannot export to PEFT: the run kept only the first {cfg.layers} layers of {cfg.model}, "
                          f"and PEFT's base model is the whole checkpoint")  # fmt: skip
    try:
        config = AutoConfig.from_pretrained(resolve(cfg.model), trust_remote_code=cfg.trust_remote_code)
        family = family_of(config)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot export to PEFT: the run's backbone {cfg.model!r} could not be read ({first[:160]})") from None
    if not family.generative or resolve_format(cfg.format, family) == "head":
        raise ConfigError(f"cannot export to PEFT: the run trained a task head (format head, {cfg.task} on {family.name} "
                          f"{cfg.model}), and the head has no PEFT form; only format text runs export")  # fmt: skip
    if cfg.method == "ptuning_v2" and family.seq2seq:
        raise ConfigError("cannot export to PEFT: P-Tuning v2 on T5 prompts the encoder's self-attention, the decoder's "
                          "and the cross-attention, and PEFT's prefix tuning reaches the decoder's self-attention only")  # fmt: skip
    return family


def _task_type(family) -> str:
    return "SEQ_2_SEQ_LM" if family.seq2seq else "CAUSAL_LM"


def _prompt_tuning(enc, cfg: RunConfig, family):
    import peft

    prompt = enc.prompt.detach()  # (l, H)
    conf = peft.PromptTuningConfig(
        task_type=_task_type(family), num_virtual_tokens=prompt.shape[0], token_dim=prompt.shape[1],
        num_transformer_submodules=1,  # T5: the encoder's prompt only (PEFT's default 2 keeps l unused rows more)
        inference_mode=True, base_model_name_or_path=cfg.model,
    )  # fmt: skip
    return conf, {"prompt_embeddings": prompt}


def _lora(enc, cfg: RunConfig, family):
    import copy

    import peft

    lm = enc.backbone
    conf = copy.deepcopy(lm.peft_config["default"])  # what ptcore injected (peft fills fan_in_fan_out for GPT-2's Conv1D)
    conf.task_type = _task_type(family)
    conf.base_model_name_or_path = cfg.model
    conf.inference_mode = True
    state = {f"base_model.model.{k}": v for k, v in peft.get_peft_model_state_dict(lm, adapter_name="default").items()}
    # every trained backbone tensor must be in the adapter, or PEFT's model is not the run's
    for name, p in lm.named_parameters():
        if p.requires_grad and f"base_model.model.{name.replace('.default.', '.')}" not in state:
            raise ConfigError(f"cannot export to PEFT: the run also trained {name} (e.g. train_layernorm), "
                              f"which PEFT's LoRA adapter does not carry")  # fmt: skip
    return conf, state


def _ptuning_v2(enc, cfg: RunConfig, family):
    import peft

    lm = enc.backbone
    layers = family.num_layers(lm.config)
    if enc.prefix_layers.get("self") != list(range(layers)):
        raise ConfigError(f"cannot export to PEFT: the run prompts layers {enc.prefix_layers.get('self')} of {layers} "
                          f"(depth), and PEFT's prefix tuning prompts every layer")  # fmt: skip
    rotary = getattr(lm.base_model, "rotary_emb", None)
    if rotary is None:
        raise ConfigError(
            f"cannot export to PEFT: PEFT's prefix tuning numbers the input from the prefix length (the prefix counts as "
            f"past tokens) and ptcore from 0; {lm.config.model_type}'s absolute position embeddings make that another model"
        )
    rope = getattr(rotary, "rope_type", "default")
    if rope not in ROPE_TYPES or getattr(rotary, "attention_scaling", 1.0) != 1.0:
        raise ConfigError(f"cannot export to PEFT: PEFT shifts the input's positions by the prefix length, and this "
                          f"backbone's rotary embedding ({rope!r}) is not a pure rotation that a rotated prefix can undo")  # fmt: skip
    from transformers.models.llama.modeling_llama import rotate_half

    with torch.no_grad():
        keys, values = enc.prefix_kv(1)["self"]  # (1, L, kv, l, d) each, dropout off (eval)
        l = keys.shape[3]
        cos, sin = rotary(keys.float(), torch.full((1, 1), l, dtype=torch.long))  # (1, 1, d): rotation by l positions
        if cos.shape[-1] != keys.shape[-1]:
            raise ConfigError("cannot export to PEFT: the backbone rotates part of each head only (partial rotary)")
        keys = (keys.float() * cos + rotate_half(keys.float()) * sin).to(values.dtype)
        # PEFT's table: (l, layers, {key, value}, kv_heads, head_dim), flattened
        table = torch.stack([keys[0], values[0]], dim=1).permute(3, 0, 1, 2, 4).reshape(l, -1)
    kv, d = family.kv_dims(lm.config)
    conf = peft.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=l, num_layers=layers, token_dim=kv * d, num_attention_heads=kv,
        encoder_hidden_size=kv * d, prefix_projection=False, inference_mode=True, base_model_name_or_path=cfg.model,
    )  # fmt: skip
    return conf, {"prompt_embeddings": table.contiguous()}


def _temp_dir(out: Path) -> Path:
    """A new directory beside ``out``, with the mode any new directory gets (``0o777 & ~umask``, applied
    by the kernel: ``tempfile.mkdtemp`` would make it 0700)."""
    for _ in range(100):
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{out.parent}: no free temp directory name for {out.name}")


BUILDERS = {"prompt_tuning": _prompt_tuning, "lora": _lora, "ptuning_v2": _ptuning_v2}


def export_peft(run_dir_or_checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the run's adapter in PEFT's format to ``out_dir`` (new or empty); return it.
    ``ConfigError`` (one line) where the run has no PEFT form; nothing is written then."""
    ckpt = find_checkpoint(run_dir_or_checkpoint)
    out = Path(out_dir).expanduser()
    _check_output(out)
    cfg = _run_config(ckpt)
    family = _refuse_early(cfg)
    model = load_checkpoint(ckpt)
    conf, tensors = BUILDERS[cfg.method](model.encoder, cfg, family)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    build = _temp_dir(out)
    try:
        conf.save_pretrained(str(build))  # adapter_config.json
        save_file(tensors, str(build / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        _check_output(out)  # still new or empty
        if out.is_dir():
            out.rmdir()
        os.replace(build, out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out
