"""Tiny *random* checkpoints written to a folder, exactly as a user's own checkpoint looks.

``write_tiny_model(DIR, "t5")`` (or ``python -m ptcore.tiny DIR --family t5``) writes
``config.json``, ``model.safetensors`` (``save_pretrained``, safe serialization), the
generation config where the family has one, and a fast tokenizer (``tokenizer.json`` +
``tokenizer_config.json``, special tokens included) that ``AutoConfig`` / ``AutoTokenizer`` /
the family's Auto model class load offline. Nothing is downloaded: the config is built in
code, the weights are random (``torch.manual_seed(seed)`` first, so a seed gives the same
weights every time) and the tokenizer is a byte-level BPE trained in milliseconds on a small
English corpus generated here (task words such as ``entailment`` / ``not_entailment`` /
``premise`` / ``choice1`` included). Byte-level means any text encodes, without unknowns.

It is for tests and for checking the machinery end to end with ``--model DIR`` (loading,
tokenizing, batching, saving, resuming). **A random tiny model learns nothing**: its scores
are chance level and say nothing about a method.

Families (the ``model_type`` written):

* ``t5``: T5 v1.1 / LM-adapt style ``T5ForConditionalGeneration`` (gated GELU, no rescaling
  of the decoder output before the head); ``<pad>`` 0 (also the decoder start), ``</s>`` 1,
  ``<unk>`` 2; every encoded sequence ends with ``</s>``, like a real T5 tokenizer; padding on
  the right. transformers 5 reads ``tie_word_embeddings=False`` as "v1.1: do not rescale" and
  always ties the head to the embeddings when it builds a T5, so the head here is tied (one
  ``shared.weight`` in the file); a real v1.1 checkpoint ships its own ``lm_head.weight``.
* ``gpt2``, ``llama``, ``qwen2``: decoder-only (``AutoModelForCausalLM``; Llama and Qwen2 with
  grouped-query attention and an untied head); ``<|endoftext|>`` 0 is bos and eos, ``<pad>`` 1;
  no token is added when encoding (GPT-2 / Qwen2 style); padding on the left, for generation.
* ``bert``: ``BertModel``; ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4;
  ``[CLS] A [SEP] B [SEP]`` with token type ids 0 / 1.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # torch / transformers are imported where a model is built: `--help` stays fast
    import transformers

FAMILIES = ("t5", "gpt2", "llama", "qwen2", "bert")
DECODERS = ("gpt2", "llama", "qwen2")
MAX_POSITIONS = 512

# special tokens per family, in id order (0, 1, 2, ...)
SPECIALS: dict[str, tuple[str, ...]] = {
    "t5": ("<pad>", "</s>", "<unk>"),
    **{f: ("<|endoftext|>", "<pad>") for f in DECODERS},
    "bert": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
}
BYTE_ALPHABET = 256  # the byte-level BPE starts from all 256 bytes
# transformers 5 loads a qwen2 folder with Qwen2Tokenizer whatever tokenizer_config.json says, and that
# class rebuilds the pipeline around the vocabulary (NFC, this split, byte level): train with the same one
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Files of an older checkpoint that would contradict the new one (overwrite=True removes them).
STALE = (
    "pytorch_model*.bin", "pytorch_model.bin.index.json", "model*.safetensors", "model.safetensors.index.json",
    "tf_model.h5", "flax_model.msgpack", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "special_tokens_map.json", "added_tokens.json", "generation_config.json",
)  # fmt: skip

# The corpus: task words (label words, field names of the benchmarks) and common English.
TASK_WORDS = (
    "entailment contradiction neutral not_entailment true false yes no positive negative acceptable unacceptable "
    "question context premise hypothesis passage sentence answer choice1 choice2 label cause effect because "
    "therefore sentiment review movie film great terrible good bad"
).split()
COMMON_WORDS = (
    "the a an of to in on at for with by from and or but not is are was were be been being have has had do does did "
    "it he she they we you i me him her them us my your his their our this that these those what which who whom whose "
    "when where why how all any both each few more most other some such only own same so than too very can will just "
    "should now there here then once again about above after before below between into through during under over "
    "up down out off one two three four five six seven eight nine ten first last new old long short little big small "
    "man woman child people time year day week night morning world life hand part place case point group number "
    "water food house home school city country government company family friend story book word name money work "
    "rain rained raining sun weather car road street door window table water tree dog cat bird fish river sea "
    "said says say go goes went gone make made know knew think thought take took see saw come came want look use "
    "find found give gave tell told ask asked seem feel try leave call keep let begin help show hear play run move "
    "live believe bring happen write sit stand lose pay meet include continue set learn change lead understand watch "
    "follow stop create speak read spend grow open walk win offer remember love consider appear buy wait serve die "
    "send expect build stay fall cut reach kill remain suggest raise pass sell require report decide pull"
).split()
PUNCTUATION = (".", ".", ".", "?", "!", ",")


def _corpus(lines: int = 600, seed: int = 0) -> list[str]:
    """A few hundred deterministic English-like lines, in the shapes prompts take."""
    rng = random.Random(seed)
    words = COMMON_WORDS + TASK_WORDS

    def sentence() -> str:
        body = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        return body[0].upper() + body[1:] + rng.choice(PUNCTUATION)

    out = [" ".join(words), " ".join(w.capitalize() for w in words), "0 1 2 3 4 5 6 7 8 9 10 100 1000 2024"]
    for i in range(lines):
        shape = i % 4
        if shape == 0:
            out.append(f"premise: {sentence()} hypothesis: {sentence()} answer: {rng.choice(TASK_WORDS[:12])}")
        elif shape == 1:
            out.append(f"Question: {sentence()} Context: {sentence()} {sentence()} Answer: {rng.choice(words)}")
        elif shape == 2:
            out.append(f"{sentence()} choice1: {sentence()} choice2: {sentence()} ({rng.randint(0, 99)})")
        else:
            out.append(f"Sentence: {sentence()} Label: {rng.choice(TASK_WORDS[:12])}")
    return out


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_json(vocab_size: int, family: str) -> str:
    """The trained ``tokenizers.Tokenizer`` as JSON (cached: each caller gets its own copy)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = SPECIALS[family]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if family == "t5" else "[UNK]" if family == "bert" else None))
    if family == "qwen2":  # as Qwen2Tokenizer builds it: digits one by one, NFC
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])  # fmt: skip
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=list(specials), show_progress=False
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    assert list(ids.values()) == list(range(len(specials))), ids  # the special tokens come first, in order
    if family == "t5":  # a T5 tokenizer appends </s> to every sequence
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", ids["</s>"])])
    elif family == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
        )  # fmt: skip
    else:  # decoder-only: the byte-level post-processor (offsets), nothing added
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512, family: str = "gpt2") -> "transformers.PreTrainedTokenizerFast":
    """A fast byte-level BPE tokenizer with ``family``'s special tokens (at most ``vocab_size``
    tokens). Trained once per (vocab_size, family) in this process; every call returns a new
    object, so changing one (``padding_side``, added tokens) leaves the others alone."""
    _check_family(family)
    if vocab_size < BYTE_ALPHABET + len(SPECIALS[family]):
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {BYTE_ALPHABET + len(SPECIALS[family])} "
                         f"tokens (256 bytes and the special tokens)")  # fmt: skip
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_tokenizer_json(vocab_size, family))
    common = dict(tokenizer_object=backend, model_max_length=MAX_POSITIONS, clean_up_tokenization_spaces=False)
    if family == "t5":
        return PreTrainedTokenizerFast(**common, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                       padding_side="right", model_input_names=["input_ids", "attention_mask"])  # fmt: skip
    if family == "bert":
        return PreTrainedTokenizerFast(
            **common, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
            padding_side="right", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )  # fmt: skip
    return PreTrainedTokenizerFast(**common, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<pad>",
                                   padding_side="left", model_input_names=["input_ids", "attention_mask"])  # fmt: skip


def tiny_config(family: str, *, vocab_size: int = 512, hidden: int = 32, layers: int = 2, heads: int = 4,
                intermediate: Optional[int] = None, kv_heads: Optional[int] = None):  # fmt: skip
    """The ``transformers`` config of a tiny ``family`` model (ids match :func:`tiny_tokenizer`).
    ``intermediate``: the FFN width (default ``2·hidden``; GPT-2 ``4·hidden``); ``kv_heads``: the
    key/value heads of Llama and Qwen2 (default ``heads // 2``). The bench builds its small
    random generative backbones here too (``orchestrator/bench/generative.py``)."""
    _check_family(family)
    if hidden % heads:
        raise ValueError(f"hidden={hidden} must be a multiple of heads={heads}")
    if kv_heads is not None and (kv_heads < 1 or heads % kv_heads):
        raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}")
    import transformers

    ffn = intermediate or 2 * hidden

    if family == "t5":  # v1.1 / LM-adapt: gated GELU, no output rescaling (tie_word_embeddings=False); <pad> starts the decoder
        return transformers.T5Config(
            vocab_size=vocab_size, d_model=hidden, d_kv=hidden // heads, d_ff=ffn, num_layers=layers,
            num_decoder_layers=layers, num_heads=heads, relative_attention_num_buckets=8, relative_attention_max_distance=16,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        )  # fmt: skip
    if family == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_positions=MAX_POSITIONS, n_embd=hidden, n_layer=layers, n_head=heads,
                                       n_inner=intermediate, bos_token_id=0, eos_token_id=0, pad_token_id=1)  # fmt: skip
    if family in ("llama", "qwen2"):  # grouped-query attention, like the real ones
        cls = transformers.LlamaConfig if family == "llama" else transformers.Qwen2Config
        return cls(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv_heads or max(1, heads // 2), max_position_embeddings=MAX_POSITIONS,
            bos_token_id=0, eos_token_id=0, pad_token_id=1, tie_word_embeddings=False,
        )  # fmt: skip
    return transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                   intermediate_size=ffn, max_position_embeddings=MAX_POSITIONS, pad_token_id=0)  # fmt: skip


def tiny_model(family: str, *, seed: int = 0, **config_kw):
    """A random tiny ``family`` model (seeded: the same seed gives the same weights)."""
    import torch
    import transformers

    config = tiny_config(family, **config_kw)
    torch.manual_seed(seed)
    if family == "t5":
        return transformers.T5ForConditionalGeneration(config)
    if family == "bert":
        return transformers.BertModel(config)
    return transformers.AutoModelForCausalLM.from_config(config)


def write_tiny_model(
    directory: str | os.PathLike, family: str, *, seed: int = 0, vocab_size: int = 512, hidden: int = 32, layers: int = 2,
    heads: int = 4, overwrite: bool = False,
) -> Path:  # fmt: skip
    """Write a tiny random ``family`` checkpoint (config, safetensors weights, fast tokenizer)
    to ``directory`` and return it. The folder is built beside the target and moved in at the
    end, so a failure leaves no half checkpoint. A non-empty ``directory`` is refused unless
    ``overwrite``: then the new files replace the old ones, and an older checkpoint's weight and
    tokenizer files that would contradict them (``pytorch_model.bin``, ``vocab.txt``, ...) are removed."""
    _check_family(family)
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"{target} is not empty; pick a new or empty directory (or pass overwrite=True / --overwrite)")
    tokenizer = tiny_tokenizer(vocab_size, family)
    model = tiny_model(family, seed=seed, vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads)
    assert len(tokenizer) <= model.config.vocab_size, (len(tokenizer), model.config.vocab_size)

    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        model.save_pretrained(build, safe_serialization=True)
        tokenizer.save_pretrained(build)
        target.mkdir(exist_ok=True)
        if overwrite:
            for pattern in STALE:
                for old in target.glob(pattern):
                    if old.is_file():
                        old.unlink()
        for path in sorted(build.iterdir()):
            os.replace(path, target / path.name)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ptcore.tiny",
        description="Write a tiny random checkpoint (config.json, model.safetensors, fast tokenizer) to DIR, without a download. "
        "For checking the machinery with --model DIR: a random tiny model learns nothing.",
    )
    parser.add_argument("directory", metavar="DIR", help="where to write it (created; must be new or empty)")
    parser.add_argument("--family", required=True, choices=FAMILIES, help="model_type written")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default 0)")
    parser.add_argument("--vocab-size", type=int, default=512, help="vocabulary size (default 512, at least 261)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size (default 32)")
    parser.add_argument("--layers", type=int, default=2, help="layers (default 2; for t5, each of encoder and decoder)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4; must divide --hidden)")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoint files of a non-empty DIR")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging  # here, not at the top: `--help` needs no transformers

    hf_logging.disable_progress_bar()  # one line of output, no "Writing model shards" bar
    try:
        out = write_tiny_model(args.directory, args.family, seed=args.seed, vocab_size=args.vocab_size, hidden=args.hidden,
                               layers=args.layers, heads=args.heads, overwrite=args.overwrite)  # fmt: skip
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"wrote a tiny random {args.family} model (seed {args.seed}, vocab {args.vocab_size}, hidden {args.hidden}, "
          f"{args.layers} layers; it learns nothing) to {out}: {files}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
