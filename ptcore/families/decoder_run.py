"""The decoder family's runner: causal LMs (GPT-2, Llama, Mistral, Qwen2/3, Gemma) that take a KV ``Cache``.

Prompts enter as the encoder family's do:

* a soft prompt (prompt tuning) is ``l`` input embeddings in front of the whole row, before
  its left padding: ``[P, pad.., x]``;
* per-layer prefixes (P-Tuning v2) are keys/values that every prompted self-attention
  prepends through the model's cache argument (:class:`~ptcore.methods.common.PrefixCache`);
  the attention mask has the prefix columns first, visible to every query.

Positions are counted over the real tokens only, ``cumsum(mask) - 1``: a row scores the same
alone or beside longer, left-padded rows. A soft prompt's vectors are tokens of the row, so
the input after them starts at position ``l`` (as if typed); prefixes shift nothing (the
input starts at 0, as on encoders; PEFT and the reference code shift it by ``l``).

The runner builds the 4-D attention mask itself (transformers takes a prepared 4-D mask as
it is): causal, padding and prefix columns in one additive mask. Un-prompted layers of a
partial ``depth`` get the same mask without the prefix columns (a forward pre-hook), so they
compute exactly what the plain model computes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from transformers import DynamicCache

from .cache import PrefixCache, cache_argument
from .base import Runner, additive, causal_mask, take_greedy_step

# decoder blocks that take the attention mask as a positional argument: its index
MASK_ARG = {"gpt2": 2}


def decoder_blocks(lm: nn.Module) -> tuple[nn.Module, str]:
    """(the module holding the blocks, the attribute name): ``model.layers`` or GPT-2's ``transformer.h``."""
    base = lm.base_model
    for attr in ("layers", "h"):
        if isinstance(getattr(base, attr, None), nn.ModuleList):
            return base, attr
    raise ValueError(f"{type(lm).__name__}: no decoder blocks found (expected .layers or .h)")


class GenerationPrefixCache(DynamicCache):
    """A real ``DynamicCache`` for greedy decoding whose prompted layers also return the prefix.

    The cache stores the tokens seen so far (a soft prompt's included), as any
    ``DynamicCache``; ``update`` hands a prompted layer ``[prefix; stored]``. Nothing of the
    prefix is stored, so its length never counts as a seen token."""

    def __init__(self, prefixes: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.prefixes = prefixes  # layer -> (keys, values), each (N, kv_heads, l, d)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        kv = self.prefixes.get(layer_idx)
        if kv is None:
            return keys, values
        return torch.cat([kv[0], keys], dim=-2), torch.cat([kv[1], values], dim=-2)


class DecoderRunner(Runner):
    """Runs a causal LM with the method's soft prompt and/or prefixes (see the module doc)."""

    def __init__(self, encoder):
        self.encoder = encoder  # the method's PromptEncoder (owns the prompts)
        self.lm = encoder.backbone
        self.base = self.lm.base_model
        self.cache_arg = cache_argument(type(self.base))
        holder, attr = decoder_blocks(self.lm)
        prompted = set(encoder.prefix_layers.get("self", ()))
        self._strip = 0  # prefix columns an un-prompted layer drops, while a forward runs
        if prompted:
            arg = MASK_ARG.get(self.lm.config.model_type)
            for i, block in enumerate(getattr(holder, attr)):
                if i not in prompted:
                    block.register_forward_pre_hook(self._plain_mask_hook(arg), with_kwargs=True)

    def _plain_mask_hook(self, arg: Optional[int]):
        def hook(module, args, kwargs):
            if not self._strip:
                return None
            if kwargs.get("attention_mask") is not None:
                kwargs["attention_mask"] = kwargs["attention_mask"][..., self._strip:]
            elif arg is not None and len(args) > arg and args[arg] is not None:
                args = (*args[:arg], args[arg][..., self._strip:], *args[arg + 1:])
            return args, kwargs

        return hook

    # ------------------------------------------------------------------ one forward

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Embeddings with the soft prompt in front, its mask, and the prefixes. -> (embeds (N,S,H),
        mask (N,S), soft length s, prefixes {layer: (k, v)}, prefix length l, prefix mask (N,l) or None)"""
        n = input_ids.shape[0]
        self.encoder.prepare(input_ids, attention_mask)  # a method whose prompts depend on the input chooses them
        embeds = self.lm.get_input_embeddings()(input_ids)  # (N,T,H)
        mask = attention_mask
        soft = self.encoder.soft_prompt(n)  # (N,s,H) or None
        s = 0
        if soft is not None:
            s = soft.shape[1]
            embeds = torch.cat([soft.to(embeds.dtype), embeds], dim=1)  # (N,s+T,H)
            smask = self.encoder.soft_prompt_mask(n)  # (N,s) or None: unused slots neither seen nor counted
            mask = torch.cat([mask.new_ones(n, s) if smask is None else smask.to(mask.dtype), mask], dim=1)
        prefixes, l, pmask = {}, 0, None
        kv = self.encoder.prefix_kv(n)  # {"self": (keys, values)}: (N, layers, kv_heads, l, d) each
        if kv and "self" in kv:
            keys, values = kv["self"]
            l = keys.shape[3]
            prefixes = dict(zip(self.encoder.prefix_layers["self"], zip(keys.unbind(1), values.unbind(1))))
            pmask = kv.get("mask")
        return embeds, mask, s, prefixes, l, pmask

    def _forward(self, embeds, mask, q_len, positions, cache, l, pmask):
        """The base model over the last ``q_len`` of ``mask``'s tokens. -> (N,q_len,H)"""
        attn = additive(causal_mask(mask, q_len, l, pmask), embeds.dtype)  # (N,1,q,l+Tk)
        self._strip = l
        try:
            out = self.base(inputs_embeds=embeds, attention_mask=attn, position_ids=positions, use_cache=False,
                            **{self.cache_arg: cache})
        finally:
            self._strip = 0
        return out.last_hidden_state

    def hidden(self, input_ids, attention_mask):
        """(N,T) -> (N,T,H) the input tokens' final states (a head reads them)."""
        embeds, mask, s, prefixes, l, pmask = self._inputs(input_ids, attention_mask)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # (N,S) real tokens only
        cache = PrefixCache(prefixes, l) if prefixes else None
        h = self._forward(embeds, mask, mask.shape[1], positions, cache, l, pmask)
        return h[:, s:]

    def logits(self, input_ids, attention_mask) -> torch.Tensor:
        """(N,T) -> (N,T,V) next-token logits at every input token."""
        return self.lm.get_output_embeddings()(self.hidden(input_ids, attention_mask))

    def target_logprobs(self, batch: dict) -> torch.Tensor:
        """``input_ids`` (M,T): source then target, left-padded; ``target_mask`` (M,T) 1 on the
        target tokens. -> (M,T-1) log p of each token given those before it, 0 off the target."""
        ids = batch["input_ids"]
        logp = torch.log_softmax(self.logits(ids, batch["attention_mask"])[:, :-1].float(), dim=-1)  # (M,T-1,V)
        tok = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (M,T-1)
        return tok * batch["target_mask"][:, 1:].to(tok.dtype)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding through a KV cache that holds the prefixes (left-padded rows)."""
        eos = self.lm.config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        n = input_ids.shape[0]
        embeds, mask, s, prefixes, l, pmask = self._inputs(input_ids, attention_mask)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        cache = GenerationPrefixCache(prefixes)
        h = self._forward(embeds, mask, mask.shape[1], positions, cache, l, pmask)[:, -1]  # (N,H)
        out: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        pos = positions[:, -1:]  # (N,1)
        for _ in range(max_new_tokens):
            nxt = self.lm.get_output_embeddings()(h).argmax(-1)  # (N,)
            if take_greedy_step(nxt.tolist(), out, done, eos):
                break
            mask = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
            pos = pos + 1
            step = self.lm.get_input_embeddings()(nxt.unsqueeze(1))  # (N,1,H)
            h = self._forward(step, mask, 1, pos, cache, l, pmask)[:, -1]
        return out
