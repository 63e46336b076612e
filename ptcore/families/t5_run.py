"""The T5 family's runner (T5, T5 v1.1 / LM-adapt, Flan-T5, mT5): text to text, prompts in the encoder and decoder.

* A soft prompt (prompt tuning, Lester et al.) is ``l`` vectors in front of the encoder's
  input, as in the paper; the decoder reads their encoder states through cross-attention.
  Dynamic prompting's position choice places ``P[j:] x P[:j] </s>`` instead
  (``PromptEncoder.place_soft_prompt``), as its reference code does.
* Per-layer prefixes (P-Tuning v2) enter three sites, each with its own ``l`` keys/values
  per layer: the encoder's self-attention (``encoder``), the decoder's self-attention
  (``decoder``) and its cross-attention (``cross``). PEFT's prefix tuning reaches the decoder
  only.

How: a forward pre-hook on every prompted ``T5Attention`` hands it the layer's prefix
through its ``cache`` argument (the attention prepends what ``cache.update`` returns), the
mask with the prefix columns first (visible to every query; the decoder's own columns stay
causal), and the relative position bias of the longer key row. T5 shares one bias across a
stack's layers, computed in the first; here every layer gets the bias for its own key length
from the first layer's bucket table: a prefix slot sits before the first token (relative
positions ``-l..-1`` from it, as a past token would), input tokens keep their own relative
positions, and an un-prompted layer gets exactly the plain bias. Cross-attention has no
position bias in T5.

Generation is greedy. The encoder runs once; the decoder runs over the whole target so far
at every step (no decoder KV cache: targets here are short, and the prefixes then need no
cache of their own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .base import Runner, take_greedy_step

SITES = ("encoder", "decoder", "cross")


class _LayerPrefix:
    """What a prompted ``T5Attention`` reads as its ``cache``: ``update`` prepends the prefix."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values  # (M, heads, l, d)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        return self.keys.shape[-2]


@dataclass
class _Forward:
    """The prefixes of one forward: (site, layer) -> (keys, values), each (M, heads, l, d)."""

    kv: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]
    mask: dict[str, Optional[torch.Tensor]]  # site -> (M, l) prefix mask or None
    bias: dict[tuple, torch.Tensor] = field(default_factory=dict)  # (site, q, k, past) -> position bias


def _extend(mask: Optional[torch.Tensor], prefix: int, q: int, k: int, causal: bool, pmask: Optional[torch.Tensor], like: torch.Tensor):
    """The layer's mask with ``prefix`` columns in front. mask: None, bool or additive (N|1, 1, q, k)."""
    dev = like.device
    if mask is None:
        keys = torch.ones(1, 1, q, k, dtype=torch.bool, device=dev)
        if causal:  # sdpa would have used is_causal: make it explicit, the queries are the last q of the k keys
            keys = keys & (torch.arange(k, device=dev)[None, :] <= torch.arange(k - q, k, device=dev)[:, None])
        mask = keys
    n = mask.shape[0] if pmask is None else pmask.shape[0]
    if mask.dtype == torch.bool:
        front = torch.ones(n, 1, q, prefix, dtype=torch.bool, device=dev) if pmask is None else pmask.bool()[:, None, None, :].expand(n, 1, q, prefix)
    else:
        front = torch.zeros(n, 1, q, prefix, dtype=mask.dtype, device=dev)
        if pmask is not None:
            front = front.masked_fill(~pmask.bool()[:, None, None, :].expand(n, 1, q, prefix), torch.finfo(mask.dtype).min)
    return torch.cat([front, mask.expand(n, *mask.shape[1:])], dim=-1)


def shift_right(labels: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    """Teacher forcing's decoder input: the start token, then the targets but their last; -100 -> pad. (M,Tl)"""
    out = labels.new_full(labels.shape, start)
    out[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] < 0, pad)
    return out


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's relative position buckets (Raffel et al., 2020; the formula of transformers'
    ``T5Attention``, whose helper is private): exact buckets for small distances, logarithmic
    ones up to ``max_distance``, the sign its own half when bidirectional."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    large = max_exact + (
        torch.log(relative_position.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(relative_position < max_exact, relative_position, large)


class T5Runner(Runner):
    """Runs a T5ForConditionalGeneration with the method's soft prompt and/or prefixes."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.lm = encoder.backbone
        self._state: Optional[_Forward] = None
        self._rel = {  # the first layer's self-attention of each stack holds the relative position buckets
            "encoder": self.lm.encoder.block[0].layer[0].SelfAttention,
            "decoder": self.lm.decoder.block[0].layer[0].SelfAttention,
        }
        if any(encoder.prefix_layers.get(s) for s in SITES):
            for i, block in enumerate(self.lm.encoder.block):
                block.layer[0].SelfAttention.register_forward_pre_hook(self._hook("encoder", i), with_kwargs=True)
            for i, block in enumerate(self.lm.decoder.block):
                block.layer[0].SelfAttention.register_forward_pre_hook(self._hook("decoder", i), with_kwargs=True)
                block.layer[1].EncDecAttention.register_forward_pre_hook(self._hook("cross", i), with_kwargs=True)

    # ------------------------------------------------------------------ the hook

    def _bias(self, site: str, q: int, k: int, past: int, like: torch.Tensor) -> torch.Tensor:
        key = (site, q, k, past)
        st = self._state
        if key not in st.bias:
            st.bias[key] = self._rel[site].compute_bias(q, k, device=like.device, past_seen_tokens=past)
        return st.bias[key]

    def _masked_bias(self, site: str, q: int, pmask: torch.Tensor) -> torch.Tensor:
        """The bias of a prefix some of whose slots are masked out (dynamic prompting's length):
        the visible slots sit right before the first token, as a prefix of that length would
        (slot j at -(visible slots from j on)). -> (N, heads, q, l + q)"""
        key = (site, q, "masked", id(pmask))
        st = self._state
        if key not in st.bias:
            rel_mod = self._rel[site]
            n = pmask.shape[0]
            dev = pmask.device
            front = -pmask.long().flip(1).cumsum(1).flip(1)  # (N,l) key positions of the prefix slots
            keys = torch.cat([front, torch.arange(q, device=dev).expand(n, q)], dim=1)  # (N, l+q)
            rel = keys[:, None, :] - torch.arange(q, device=dev)[None, :, None]  # (N, q, l+q)
            bucket = relative_position_bucket(
                rel, bidirectional=not rel_mod.is_decoder, num_buckets=rel_mod.relative_attention_num_buckets,
                max_distance=rel_mod.relative_attention_max_distance,
            )
            st.bias[key] = rel_mod.relative_attention_bias(bucket).permute(0, 3, 1, 2)  # (N, heads, q, l+q)
        return st.bias[key]

    def _hook(self, site: str, layer: int):
        def hook(module, args, kwargs):
            st = self._state
            if st is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            q = hidden.shape[1]
            kv = st.kv.get((site, layer))
            l = 0 if kv is None else kv[0].shape[-2]
            if site == "cross":
                if kv is None:
                    return None
                k = kwargs["key_value_states"].shape[1]
                kwargs["cache"] = _LayerPrefix(*kv)
                kwargs["mask"] = _extend(kwargs.get("mask"), l, q, k, False, st.mask.get(site), hidden)
                kwargs["position_bias"] = None  # no relative bias in cross-attention: zeros of the new width
                return args, kwargs
            # self-attention: the bias for this layer's key row, from the stack's bucket table
            pmask = st.mask.get(site)
            if kv is not None and pmask is not None:
                kwargs["position_bias"] = self._masked_bias(site, q, pmask)
            else:
                kwargs["position_bias"] = self._bias(site, q, l + q, l, hidden)
            if kv is not None:
                kwargs["cache"] = _LayerPrefix(*kv)
                kwargs["mask"] = _extend(kwargs.get("mask"), l, q, q, site == "decoder", st.mask.get(site), hidden)
            return args, kwargs

        return hook

    # ------------------------------------------------------------------ forwards

    def _prefixes(self, n: int, rows: Optional[torch.Tensor]) -> _Forward:
        """The method's prefixes for ``n`` sources; the decoder sites' rows follow ``rows`` (M,)
        (each target reads its source's prefixes)."""
        kv = self.encoder.prefix_kv(n) or {}
        state = _Forward({}, {})
        for site in SITES:
            if site not in kv:
                continue
            keys, values = kv[site]  # (N, layers, heads, l, d)
            pm = kv.get(f"{site}_mask", kv.get("mask"))
            if site != "encoder" and rows is not None:
                keys, values = keys[rows], values[rows]
                pm = None if pm is None else pm[rows]
            for j, layer in enumerate(self.encoder.prefix_layers[site]):
                state.kv[(site, layer)] = (keys[:, j], values[:, j])
            state.mask[site] = pm
        return state

    def _encode(self, input_ids, attention_mask):
        """Encoder states of the sources with the soft prompt placed (in front; dynamic prompting:
        around the input). -> ((N,s+T,H), (N,s+T))"""
        embeds = self.lm.get_input_embeddings()(input_ids)  # (N,T,H)
        embeds, mask = self.encoder.place_soft_prompt(embeds, attention_mask)  # (N,s+T,H), (N,s+T)
        out = self.lm.encoder(inputs_embeds=embeds, attention_mask=mask)
        return out.last_hidden_state, mask

    def _decode(self, states, enc_mask, decoder_input_ids) -> torch.Tensor:
        """Decoder over ``decoder_input_ids`` (M,Td) reading ``states`` (M,S,H). -> logits (M,Td,V)"""
        out = self.lm.decoder(input_ids=decoder_input_ids, encoder_hidden_states=states, encoder_attention_mask=enc_mask,
                              use_cache=False)
        h = out.last_hidden_state
        cfg = self.lm.config
        if getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings):  # T5 v1.0 (tied embeddings) scales before the LM head
            h = h * (cfg.d_model ** -0.5)
        return self.lm.lm_head(h)

    def hidden(self, input_ids, attention_mask):
        raise NotImplementedError("T5 runs text formats only")

    def target_logprobs(self, batch: dict) -> torch.Tensor:
        """``input_ids`` (N,T) sources; ``labels`` (M,Tl) targets (-100 padding); ``rows`` (M,)
        the source of each target. -> (M,Tl) log p of each target token, 0 on padding."""
        labels, rows = batch["labels"], batch["rows"]
        self.encoder.prepare(batch["input_ids"], batch["attention_mask"])  # input-dependent prompts choose here
        self._state = self._prefixes(batch["input_ids"].shape[0], rows)
        try:
            states, mask = self._encode(batch["input_ids"], batch["attention_mask"])  # (N,S,H)
            dec_in = shift_right(labels, self.lm.config.decoder_start_token_id, self.lm.config.pad_token_id)  # (M,Tl)
            logits = self._decode(states[rows], mask[rows], dec_in)
        finally:
            self._state = None
        logp = torch.log_softmax(logits.float(), dim=-1)
        tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (M,Tl)
        return tok * (labels >= 0).to(tok.dtype)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, max_new_tokens: int) -> list[list[int]]:
        cfg = self.lm.config
        n = input_ids.shape[0]
        self.encoder.prepare(input_ids, attention_mask)
        self._state = self._prefixes(n, None)
        try:
            states, mask = self._encode(input_ids, attention_mask)
            dec = torch.full((n, 1), cfg.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
            out: list[list[int]] = [[] for _ in range(n)]
            done = [False] * n
            for _ in range(max_new_tokens):
                self._state.bias.clear()
                nxt = self._decode(states, mask, dec)[:, -1].argmax(-1)  # (N,)
                if take_greedy_step(nxt.tolist(), out, done, {cfg.eos_token_id}):
                    break
                dec = torch.cat([dec, nxt.unsqueeze(1)], dim=1)
        finally:
            self._state = None
        return out
