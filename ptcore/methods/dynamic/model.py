from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...backbones import Backbone
from ...errors import ConfigError
from ..base import PromptEncoder
from ..common import gather_tokens, insert_prompt, make_deep_prefix, resolve_layers
from ..prompt_tuning.model import init_prompt
from ..ptuning_v2.model import PrefixEncoder, split_kv
from .config import DynamicConfig
from .select import Selector, arrangement_tap, mask_tap, sample_one_hot, temperature


@dataclass
class Choices:
    """What one forward picked, per instance (for logging and tests)."""

    split: Optional[torch.Tensor] = None  # (N,) long, j in 0..l (shallow with position)
    split_onehot: Optional[torch.Tensor] = None  # (N,l+1) straight-through one-hot (mixture_soft: the soft sample)
    length: Optional[torch.Tensor] = None  # (N,) long, the chosen length
    length_onehot: Optional[torch.Tensor] = None  # (N,m) straight-through one-hot over candidates
    prompt_mask: Optional[torch.Tensor] = None  # (N,l) hard 0/1
    soft_mask: Optional[torch.Tensor] = None  # (N,l) same values, gradient to the length logits
    pool_weights: Optional[torch.Tensor] = None  # (N,k) softmax mixture of the pool


class DynamicEncoder(PromptEncoder):
    """Dynamic prompting over a frozen backbone (see :class:`DynamicConfig`).

    shallow: ``[CLS] P[j:] x P[:j] [SEP]`` with P the (pool-mixed) prompt, slots beyond the
    chosen length masked out; positions run 0..T+l-1 over the assembled sequence like
    prompt tuning. deep: P-Tuning v2 prefixes (pool-mixed per instance), prefix slots beyond
    the chosen length masked out. Instance-level choices and the pool weights read the
    mean-pooled backbone output on the unprompted input (one extra no-grad backbone pass).
    """

    def __init__(self, backbone: Backbone, config: DynamicConfig):
        super().__init__(backbone, config)
        cfg = self.backbone.config
        h, l = self.hidden_size, config.prompt_length
        self.tau = float(config.tau0)
        self._choices: Optional[Choices] = None  # generative families: this forward's choices (prepare)
        why = config.family_problem(self.family.name, cfg.model_type)  # check_run says it before the weights load
        if why:
            raise ConfigError(why)
        if config.base == "shallow":
            sets = [init_prompt(self.backbone, l, config.init) for _ in range(config.pool_size)]
            self.pool = nn.Parameter(torch.stack(sets))  # (k,l,H)
        elif self.family.generative:  # every attention site of the family, as P-Tuning v2 (ptuning_v2/model.py)
            self.prefix_layers = {site: resolve_layers(config.depth, n) for site, n in self.family.prefix_sites(cfg).items()}
            self.kv_heads, head_dim = self.family.kv_dims(cfg)
            total = sum(len(v) for v in self.prefix_layers.values())
            self.prefix_encoder = PrefixEncoder(config, total, self.kv_heads * head_dim, num_sets=config.pool_size, token_dim=h)
            self.dropout = nn.Dropout(config.prefix_dropout)
        else:
            self.layers = resolve_layers(config.depth, cfg.num_hidden_layers)
            self.prefix_encoder = PrefixEncoder(config, len(self.layers), h, num_sets=config.pool_size)
            self.dropout = nn.Dropout(config.prefix_dropout)
            self.deep = make_deep_prefix(self.backbone, self.layers)
        if config.position != "none" and config.estimator == "first_order":  # the mixtures need no position table
            kind = getattr(cfg, "position_embedding_type", "absolute") or "absolute"
            emb = getattr(self.backbone, "embeddings", None)
            if kind != "absolute" or getattr(emb, "position_embeddings", None) is None:
                has = "relative positions only" if getattr(emb, "position_embeddings", None) is None else f"{kind!r} positions"
                raise ConfigError(
                    f"position={config.position!r} needs a backbone with absolute position embeddings "
                    f"(this {cfg.model_type} has {has}); use position='none', or estimator: mixture (the DP reference's)"
                )
        self.position_selector = Selector(config.position, h, l + 1, config.selector) if config.position != "none" else None
        cands = config.candidate_lengths()
        self.register_buffer("candidates", torch.tensor(cands, dtype=torch.long), persistent=False)
        # cover[i, k] = 1 iff candidate i keeps slot k
        self.register_buffer("cover", (torch.arange(l).unsqueeze(0) < self.candidates.unsqueeze(1)).float(), persistent=False)
        self.length_selector = Selector(config.length, h, len(cands), config.selector) if config.length != "none" else None
        self.pool_net = nn.Linear(h, config.pool_size) if config.pool_size > 1 else None
        if self.pool_net is not None:  # start from the plain average of the pool
            nn.init.zeros_(self.pool_net.weight)
            nn.init.zeros_(self.pool_net.bias)
        self.last_choices: Optional[Choices] = None

    # ------------------------------------------------------------------ interface

    @property
    def extra_tokens(self) -> int:
        return self.config.prompt_length if self.config.base == "shallow" else 0

    @property
    def needs_pooled(self) -> bool:
        c = self.config
        return c.position == "instance" or c.length == "instance" or c.pool_size > 1

    def on_train_step(self, step: int, total_steps: int) -> dict[str, float]:
        c = self.config
        self.tau = temperature(step, total_steps, c.tau0, c.tau_min, c.anneal, c.anneal_rate)
        out = {"tau": self.tau}
        last = self.last_choices  # the previous training batch's picks
        if last is not None and last.split is not None:
            out["split_mean"] = last.split.float().mean().item()
        if last is not None and last.length is not None:
            out["length_mean"] = last.length.float().mean().item()
        return out

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        token_type_ids = self.token_types(token_type_ids, input_ids)  # zeros for RoBERTa / when absent
        if self.config.base == "deep":
            return self._forward_deep(input_ids, attention_mask, token_type_ids)
        embeds, mask, types, index, _ = self.assemble(input_ids, attention_mask, token_type_ids)
        n, s = mask.shape
        out = self.backbone(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types, position_ids=self.position_ids(n, s, input_ids.device))
        return gather_tokens(out.last_hidden_state, index)  # (N,T,H)

    # ------------------------------------------------------------------ generative families

    def prepare(self, input_ids, attention_mask) -> None:
        """Called by the family's runner before it asks for prompts: this forward's choices
        (instance level: from the unprompted input's mean-pooled states)."""
        n = input_ids.shape[0]
        pooled = self.pooled_input(input_ids, attention_mask, None) if self.needs_pooled else None
        self._choices = self.choose(pooled, n)
        if self.training:
            self.last_choices = _detached(self._choices)

    def soft_prompt(self, n: int):
        if self.config.base != "shallow":
            return None
        return self._prompt(self._choices, n)

    def soft_prompt_mask(self, n: int):
        """(N,l) 1 = the slot is within the chosen length; None: every slot."""
        return self._choices.prompt_mask if self.config.base == "shallow" else None

    def place_soft_prompt(self, embeds, attention_mask):
        """T5: ``P[j:] x P[:j] </s>`` at this forward's split j (the DP reference's layout, no
        leading token); training: the reference's mixture of the l+1 layouts (hard forward).
        (N,T,H), (N,T) -> (N,T+l,H), (N,T+l)"""
        ch = self._choices
        if self.config.base != "shallow" or ch.split is None:
            return super().place_soft_prompt(embeds, attention_mask)
        prompt = self._prompt(ch, embeds.shape[0]).to(embeds.dtype)  # (N,l,H)
        out, mask, _, _ = self._place(embeds, attention_mask, torch.zeros_like(attention_mask), prompt, ch, head=0)
        return out, mask

    def prefix_kv(self, n: int):
        if self.config.base != "deep":
            return None
        ch = self._choices
        flat = self.dropout(self._mix(self.prefix_encoder(), ch, n))  # (N,l,all layers*2*kv*d)
        if ch.soft_mask is not None:
            flat = mask_tap(flat, ch.soft_mask)
        total = sum(len(v) for v in self.prefix_layers.values())
        keys, values = split_kv(flat, total, self.kv_heads)
        out, start = {}, 0
        for site, layers in self.prefix_layers.items():
            out[site] = (keys[:, start:start + len(layers)], values[:, start:start + len(layers)])
            start += len(layers)
        if ch.prompt_mask is not None:
            out["mask"] = ch.prompt_mask  # (N,l): slots past the chosen length are masked at every site
        return out

    # ------------------------------------------------------------------ pieces

    def pooled_input(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        """Mean-pooled backbone output on the unprompted input (N,H); no grad when frozen.
        A decoder LM: its base model's last states (real-token positions); T5: its encoder's."""
        n, t = input_ids.shape
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.backbone.parameters())
        if self.family.generative:
            with torch.set_grad_enabled(grad):
                if self.family.seq2seq:
                    h = self.backbone.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                else:
                    pos = (attention_mask.cumsum(1) - 1).clamp(min=0)
                    h = self.backbone.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos).last_hidden_state
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                return (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        with torch.set_grad_enabled(grad):
            h = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                position_ids=self.position_ids(n, t, input_ids.device),
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def choose(self, pooled: Optional[torch.Tensor], n: int) -> Choices:
        """Sample (training) or argmax (eval) the split point and length; pool weights."""
        ch = Choices()
        if self.position_selector is not None:
            logits = self.position_selector(pooled, n)
            if self.training and self.config.estimator == "mixture_soft":
                ch.split_onehot = F.gumbel_softmax(logits, tau=self.tau, hard=False)  # (N,l+1): the forward mixes
                ch.split = ch.split_onehot.detach().argmax(-1)  # the layout (mask, segments, index) of the likeliest
            else:
                ch.split_onehot, ch.split = sample_one_hot(logits, self.tau, self.training)
        if self.length_selector is not None:
            y, idx = sample_one_hot(self.length_selector(pooled, n), self.tau, self.training)
            ch.length_onehot, ch.length = y, self.candidates[idx]
            ch.soft_mask = y @ self.cover.to(y.dtype)  # (N,l): cumulative of the one-hot, 1/0 in value
            ch.prompt_mask = self.cover[idx].long()  # (N,l) exact 0/1 for attention
        if self.pool_net is not None:
            ch.pool_weights = torch.softmax(self.pool_net(pooled), dim=-1)  # (N,k)
        return ch

    def _mix(self, sets: torch.Tensor, ch: Choices, n: int) -> torch.Tensor:
        """(k,l,D) pool -> (N,l,D) per-instance prompt."""
        if ch.pool_weights is None:
            return sets[0].unsqueeze(0).expand(n, -1, -1)
        return torch.einsum("nk,kld->nld", ch.pool_weights.to(sets.dtype), sets)

    def assemble(self, input_ids, attention_mask, token_type_ids):
        """Shallow: the prompted input for one encoder pass.

        Returns ``(embeds (N,T+l,H), mask (N,T+l), token_type_ids (N,T+l), index (N,T), choices)``.
        """
        n, t = input_ids.shape
        words = self.backbone.get_input_embeddings()(input_ids)  # (N,T,H)
        pooled = self.pooled_input(input_ids, attention_mask, token_type_ids) if self.needs_pooled else None
        ch = self.choose(pooled, n)
        embeds, mask, types, index = self._place(words, attention_mask, token_type_ids, self._prompt(ch, n), ch)
        if self.training:
            self.last_choices = _detached(ch)
        return embeds, mask, types, index, ch

    def _prompt(self, ch: Choices, n: int) -> torch.Tensor:
        """Shallow: this forward's (pool-mixed) prompt, the length's gradient tap applied. -> (N,l,H)"""
        prompt = self._mix(self.pool, ch, n)
        return mask_tap(prompt, ch.soft_mask) if ch.soft_mask is not None else prompt

    def _place(self, words, attention_mask, token_type_ids, prompt, ch: Choices, head: int = 1):
        """The input laid out at this forward's split (``insert_prompt``; ``head`` 1: [CLS] stays
        first, 0: T5), and, where the split carries a gradient, the position estimator's: the
        first-order tap or the mixture of the l+1 layouts.
        -> ``(embeds (N,T+l,H), mask (N,T+l), token_type_ids (N,T+l), index (N,T))``"""
        n = words.shape[0]
        split = ch.split if ch.split is not None else torch.zeros(n, dtype=torch.long, device=words.device)
        embeds, mask, types, index = insert_prompt(words, attention_mask, token_type_ids, prompt, split, ch.prompt_mask, head=head)
        if ch.split is not None and ch.split_onehot.requires_grad:
            if self.config.estimator == "first_order":  # refused before here where positions are not absolute (T5)
                embeds = embeds + self._split_tap(ch, attention_mask, token_type_ids, mask.shape[1])
            else:
                embeds = mixture_of_arrangements(words, attention_mask, token_type_ids, prompt, ch.split_onehot, ch.prompt_mask, head)
        return embeds, mask, types, index

    def _split_tap(self, ch: Choices, attention_mask, token_type_ids, length: int) -> torch.Tensor:
        """Zero tensor carrying the position straight-through gradient (see ``select.py``)."""
        n, l = attention_mask.shape[0], self.config.prompt_length
        emb = self.backbone.embeddings
        pos_table = emb.position_embeddings(self.position_ids(1, length, attention_mask.device)[0])  # (T+l,H)
        pm = ch.prompt_mask if ch.prompt_mask is not None else attention_mask.new_ones(n, l)
        type_front = type_back = None
        if getattr(emb, "token_type_embeddings", None) is not None:
            last = (attention_mask.sum(1) - 1).unsqueeze(1)
            type_front = emb.token_type_embeddings(token_type_ids[:, 0])  # (N,H)
            type_back = emb.token_type_embeddings(token_type_ids.gather(1, last).squeeze(1))
        return arrangement_tap(ch.split_onehot, ch.split, attention_mask, pm, pos_table, type_front, type_back)

    def prefixes(self, input_ids, attention_mask, token_type_ids):
        """Deep: per-instance keys/values (N, layers, heads, l, head_dim) x2, prefix mask, choices."""
        n = input_ids.shape[0]
        pooled = self.pooled_input(input_ids, attention_mask, token_type_ids) if self.needs_pooled else None
        ch = self.choose(pooled, n)
        flat = self.dropout(self._mix(self.prefix_encoder(), ch, n))  # (N,l,layers*2*H)
        if ch.soft_mask is not None:
            flat = mask_tap(flat, ch.soft_mask)
        keys, values = split_kv(flat, len(self.layers), self.deep.heads)
        if self.training:
            self.last_choices = _detached(ch)
        return keys, values, ch.prompt_mask, ch

    def _forward_deep(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        n, t = input_ids.shape
        keys, values, prefix_mask, _ = self.prefixes(input_ids, attention_mask, token_type_ids)
        return self.deep(
            self.backbone, input_ids, attention_mask, token_type_ids, self.position_ids(n, t, input_ids.device),
            keys, values, prefix_mask=prefix_mask,
        )  # (N,T,H)


def mixture_of_arrangements(words, attention_mask, token_type_ids, prompt, weights, prompt_mask=None, head: int = 1) -> torch.Tensor:
    """The DP reference's position estimator: ``sum_j w_j A_j`` over the l+1 assembled input
    sequences ``A_j = [CLS] P[j:] x P[:j] [SEP]`` (word embeddings, each at its slot; the
    encoder adds the slot's position; T5, ``head=0``: ``P[j:] x P[:j] </s>``, as the reference's
    ``assemble_soft_template``). With ``w`` the straight-through one-hot the value is the
    chosen arrangement exactly and ``dL/dw_j = <dL/dE, A_j>``; with a soft ``w`` the forward mixes.
    words (N,T,H), weights (N,l+1) -> (N,T+l,H)"""
    n, l = words.shape[0], prompt.shape[1]
    arrangements = torch.stack([
        insert_prompt(words, attention_mask, token_type_ids, prompt, torch.full((n,), j, dtype=torch.long, device=words.device),
                      prompt_mask, head=head)[0]
        for j in range(l + 1)
    ], dim=1)  # (N, l+1, T+l, H)
    return torch.einsum("nj,njsh->nsh", weights.to(arrangements.dtype), arrangements)


def _detached(ch: Choices) -> Choices:
    return Choices(split=ch.split, length=ch.length)
