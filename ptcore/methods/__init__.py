"""Tuning methods, registered by name: each is a typed config plus an encoder module.

To add one: create ``ptcore/methods/<name>/`` with ``config.py`` (a
:class:`~ptcore.methods.base.MethodConfig`) and ``model.py`` (a
:class:`~ptcore.methods.base.PromptEncoder`), then register it below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import ValidationError

from ..errors import ConfigError
from ..registry import Registry
from .config_base import MethodConfig
from .finetune.config import FinetuneConfig
from .lora.config import LoraConfig
from .prompt_tuning.config import PromptTuningConfig
from .ptuning_v2.config import PTuningV2Config


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type[MethodConfig]
    encoder: str  # "module:Class" of its PromptEncoder, imported on first use (names and options need no torch)
    description: str
    # how this implementation departs from (or fills gaps in) the method's paper and reference
    # code: README "Methods" and every report's method notes print these
    notes: tuple[str, ...] = ()


    @property
    def encoder_cls(self):
        """The method's :class:`~ptcore.methods.base.PromptEncoder` (imports torch)."""
        import importlib

        module, _, cls = self.encoder.partition(":")
        return getattr(importlib.import_module(module), cls)


METHODS: Registry[Method] = Registry("method")


def register(name: str, config_cls, encoder: str, description: str, notes: tuple[str, ...] = ()) -> None:
    """``encoder``: "package.module:Class" of the method's encoder (imported when a model is built)."""
    METHODS.register(name, Method(name, config_cls, encoder, description, tuple(notes)))


register("finetune", FinetuneConfig, "ptcore.methods.finetune.model:FinetuneEncoder", "fine-tuning baseline: all backbone weights + head")
register(
    "prompt_tuning", PromptTuningConfig, "ptcore.methods.prompt_tuning.model:PromptTuningEncoder", "shallow soft prompt on the input embeddings (Lester et al.)",
    notes=(
        "The prompt extends the input (the input is never cut to make room) wherever the position table has room.",
        "An encoder with a task head, not T5 text-to-text as in Lester et al.; init from random vocabulary embeddings.",
    ),
)  # fmt: skip
register(
    "ptuning_v2", PTuningV2Config, "ptcore.methods.ptuning_v2.model:PTuningV2Encoder", "deep per-layer prefix keys/values (P-Tuning v2)",
    notes=(
        "As the reference: prefix dropout drawn per instance; prefixes (or, reparameterized, the MLP's input tokens) start at N(0, 1); the MLP is Linear-Tanh-Linear.",
        "Positions of the input run 0..T-1, not shifted by the prefix length as in the reference code and PEFT.",
        "Head: a linear layer on mean-pooled states by default (the reference reads BERT's pooler); `pooling: pooler` gives the reference's choice.",
    ),
)  # fmt: skip

register(
    "lora", LoraConfig, "ptcore.methods.lora.model:LoraEncoder", "low-rank updates of the attention projections (LoRA, via huggingface/peft)",
    notes=(
        "peft's LoraConfig injected into the backbone (peft.inject_adapter_in_model): query and value by default, rank 8, alpha 16, dropout 0.1; the head as for every method.",
    ),
)  # fmt: skip

try:  # dynamic prompting lives in its own folder and registers itself when present
    from .dynamic import register_dynamic

    register_dynamic(register)
except ImportError as e:  # pragma: no cover
    if "dynamic" not in str(e):
        raise


def get_method(name: str) -> Method:
    return METHODS.get(name)


def method_fields(name: str) -> set[str]:
    return set(get_method(name).config_cls.model_fields)


def make_method_config(name: str, values: Mapping[str, Any]) -> MethodConfig:
    method = get_method(name)
    try:
        return method.config_cls(**dict(values))
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"]:  # a check across options (model validator): no single option to name
            raise ConfigError(f"method {name!r}: {err['msg'].removeprefix('Value error, ')}") from None
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"method {name!r} has no option {loc!r}; its options: {', '.join(sorted(method.config_cls.model_fields)) or '(none)'}"
            ) from None
        raise ConfigError(f"method {name!r} option {loc!r}: {err['msg']} (got {err.get('input')!r})") from None
