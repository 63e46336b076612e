"""FLOPs of one teacher-forced training step of a generative backbone (decoder LM or T5), for MFU.

The encoder bench's count (``flops.py``) for the families ``orchestrate bench --generative``
runs. Convention (multiply-add = 2 FLOPs; only matrix multiplies are counted):

* **Matrices.** Every weight matrix of the backbone's layers multiplies the tokens of its
  stream: a decoder LM's every token (soft prompt positions included); T5's encoder matrices
  and the cross-attention's key/value projections the encoder's tokens, the decoder's other
  matrices (self-attention, cross-attention query/output, FFN) the target tokens. A matrix of
  ``fan_in x fan_out`` costs ``2·fan_in·fan_out`` per token forward. Grouped-query attention:
  the key/value projections are ``hidden x kv_heads·head_dim``. GPT-2's fused ``c_attn`` is
  one ``H x 3H`` matrix; gated FFNs (Llama, T5 v1.1) hold three matrices, GPT-2's two.
* **The LM head** (``H x V``) counts only at the positions whose prediction enters the loss:
  one per target token (``2·H·V·n_target`` forward). The runners compute logits at every
  position; the rest is not useful work.
* **Attention**: ``QKᵀ`` and ``softmax·V`` cost ``2·q_dim`` each per (query, visible key)
  pair, ``q_dim = heads·head_dim``: ``4·q_dim·pairs``. Pairs are counted exactly over real
  tokens: causal self-attention over ``T`` tokens has ``T(T+1)/2`` (a decoder LM; T5's
  decoder), bidirectional ``T²`` (T5's encoder), cross-attention ``T_dec·T_enc``; a prefix of
  ``p`` slots adds ``p`` keys to every query of its site (P-Tuning v2: every layer of every
  site; PEFT's prefix tuning on T5: the decoder's self- and cross-attention only).
* **Real tokens only**: each row's non-padding source and target tokens, plus a soft prompt's
  ``s`` positions in front of the (encoder) input. Padding is not counted.
* **Backward** = the input-gradient path + weight gradients. The input-gradient path costs
  1x the forward for every matrix and the head and 2x for attention (four products against
  two), through every stack the gradient crosses: always the decoder LM / T5's decoder; T5's
  encoder unless nothing trainable sits in or below it (PEFT's prefix tuning on T5: decoder
  prefixes only; then the cross-attention's key/value projections take no gradient either).
  Weight gradients cost 1x the forward of the trained matrices: fine-tuning pays them for
  every matrix and the head (``6·params·tokens`` for the trained matmuls, ``backward = 2 x
  forward``), prompt methods for none (``forward 2N + backward 2N`` per token), LoRA for its
  own low-rank pairs only, each ``r·(fan_in + fan_out)`` weights counted ``6x`` per token
  (forward, input and weight gradients) on the matrices it adapts.

Left out: embedding lookups, position embeddings and T5's relative position bias, norms,
activations, dropout, softmax and the log-softmax over the vocabulary, the loss, the optimizer,
and prompt/prefix parameters (no matmul). Not subtracted: the few products the lowest layer
may skip when its input needs no gradient (LoRA, P-Tuning v2: that layer's Q/K/V input
gradients and one of attention's four backward products; under ``1/layers`` of the
input-gradient path), so those rows' counts are that much high.

``MFU = useful FLOPs per step / median step time / measured matmul peak`` (``peak.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

ENC, DEC = "enc", "dec"  # token streams: T5's encoder input; the decoder LM's row / T5's target


@dataclass(frozen=True)
class Matrix:
    name: str  # the module's name in transformers (what LoRA's target_modules match)
    fan_in: int
    fan_out: int
    stream: str  # ENC | DEC: whose tokens it multiplies
    count: int  # how many layers hold it


@dataclass(frozen=True)
class GenDims:
    """The shapes the count needs, read from a transformers config (:meth:`from_config`)."""

    arch: str  # "decoder" (a causal LM) | "t5"
    model_type: str
    layers: int  # decoder LM: its layers; T5: the encoder's
    decoder_layers: int  # T5: the decoder's (0 for a decoder LM)
    hidden: int
    q_dim: int  # heads x head_dim: queries, attention output
    kv_dim: int  # kv_heads x head_dim: keys, values
    intermediate: int
    gated: bool  # FFN of three matrices (gate/up/down; T5 v1.1 wi_0/wi_1/wo) or two
    vocab: int

    @classmethod
    def from_config(cls, config) -> "GenDims":
        mt = config.model_type
        if mt in ("t5", "mt5"):
            q = config.num_heads * config.d_kv
            return cls("t5", mt, config.num_layers, config.num_decoder_layers or config.num_layers, config.d_model, q, q,
                       config.d_ff, bool(config.is_gated_act), config.vocab_size)  # fmt: skip
        if mt == "gpt2":
            h = config.n_embd
            return cls("decoder", mt, config.n_layer, 0, h, h, h, config.n_inner or 4 * h, False, config.vocab_size)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        return cls("decoder", mt, config.num_hidden_layers, 0, config.hidden_size, heads * head_dim, kv * head_dim,
                   config.intermediate_size, True, config.vocab_size)  # fmt: skip

    def matrices(self) -> list[Matrix]:
        """Every weight matrix of the layers (not the embeddings, not the head)."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        if self.arch == "t5":
            ffn = [("wi_0", h, i), ("wi_1", h, i), ("wo", i, h)] if self.gated else [("wi", h, i), ("wo", i, h)]
            attn = [("q", h, q), ("k", h, kv), ("v", h, kv), ("o", q, h)]
            le, ld = self.layers, self.decoder_layers
            return (
                [Matrix(n, a, b, ENC, le) for n, a, b in attn + ffn]
                + [Matrix(n, a, b, DEC, ld) for n, a, b in attn]  # decoder self-attention
                + [Matrix("q", h, q, DEC, ld), Matrix("k", h, kv, ENC, ld), Matrix("v", h, kv, ENC, ld), Matrix("o", q, h, DEC, ld)]  # cross
                + [Matrix(n, a, b, DEC, ld) for n, a, b in ffn]
            )  # fmt: skip
        if self.model_type == "gpt2":
            mats = [("c_attn", h, 3 * h), ("c_proj", h, h), ("c_fc", h, i), ("c_proj", i, h)]
        else:
            mats = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                    ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]  # fmt: skip
        return [Matrix(n, a, b, DEC, self.layers) for n, a, b in mats]

    def params(self) -> int:
        """Matrix weights of the layers plus the head (what ``6·params·tokens`` would use)."""
        return sum(m.fan_in * m.fan_out * m.count for m in self.matrices()) + self.hidden * self.vocab


@dataclass(frozen=True)
class GenPlan:
    """What a method makes the backbone do (see the module docstring)."""

    soft_prompt: int = 0  # vectors in front of the (encoder) input
    prefix: Mapping[str, int] = field(default_factory=dict)  # site -> slots at each of its layers: "self" | "encoder", "decoder", "cross"
    trains_backbone: bool = False  # every matrix and the head get weight gradients
    lora_r: int = 0
    lora_targets: tuple[str, ...] = ()  # matrix names LoRA adapts (suffix match, as PEFT's target_modules)
    encoder_grad: bool = True  # T5: the gradient crosses the encoder


def plan_for(impl: str, method: str, arch: str, prompt_length: int, lora_r: int = 8, lora_targets: Sequence[str] = ()) -> GenPlan:
    """The plan of a bench row: ``impl`` "ptcore" (finetune, lora, prompt_tuning, ptuning_v2 at
    every layer) or "peft" (lora, prompt_tuning, prefix_tuning)."""
    l = prompt_length
    if method == "finetune":
        return GenPlan(trains_backbone=True)
    if method == "lora":
        return GenPlan(lora_r=lora_r, lora_targets=tuple(lora_targets))
    if method == "prompt_tuning":
        return GenPlan(soft_prompt=l)
    if method == "ptuning_v2":
        return GenPlan(prefix={"encoder": l, "decoder": l, "cross": l} if arch == "t5" else {"self": l})
    if method == "prefix_tuning" and impl == "peft":  # PEFT: the decoder's past key values only
        return GenPlan(prefix={"decoder": l, "cross": l}, encoder_grad=False) if arch == "t5" else GenPlan(prefix={"self": l})
    raise ValueError(f"no generative FLOP plan for {impl} {method!r}")


def _causal_pairs(t: int) -> int:
    return t * (t + 1) // 2


def step_flops(dims: GenDims, sources: Iterable[int], targets: Iterable[int], plan: GenPlan) -> dict[str, float]:
    """Useful FLOPs of one training step over rows of ``sources[i]`` real source tokens and
    ``targets[i]`` real target tokens (a decoder LM's row is the two joined). -> {"forward",
    "backward", "total"}"""
    mats = dims.matrices()
    fwd = bwd = 0.0
    for n_src, n_tgt in zip(sources, targets):
        n_src, n_tgt = int(n_src), int(n_tgt)
        if n_src + n_tgt <= 0:
            continue
        p = plan.prefix
        if dims.arch == "t5":
            tokens = {ENC: n_src + plan.soft_prompt, DEC: n_tgt}
            t_enc, t_dec = tokens[ENC], tokens[DEC]
            att_enc = dims.layers * t_enc * (t_enc + p.get("encoder", 0))
            att_dec = dims.decoder_layers * (_causal_pairs(t_dec) + t_dec * p.get("decoder", 0) + t_dec * (t_enc + p.get("cross", 0)))
        else:
            tokens = {DEC: n_src + n_tgt + plan.soft_prompt}
            t = tokens[DEC]
            att_enc, att_dec = 0, dims.layers * (_causal_pairs(t) + t * p.get("self", 0))
        grad = {DEC: True, ENC: plan.encoder_grad}
        # matrices: forward, input gradients where the gradient crosses, weight gradients if trained
        for m in mats:
            f = 2.0 * m.fan_in * m.fan_out * tokens[m.stream] * m.count
            fwd += f
            bwd += f * (grad[m.stream] + plan.trains_backbone)
            if plan.lora_r and any(m.name == t or m.name.endswith("." + t) for t in plan.lora_targets):
                lora = 2.0 * plan.lora_r * (m.fan_in + m.fan_out) * tokens[m.stream] * m.count
                fwd += lora
                bwd += 2 * lora  # input and weight gradients
        # attention: 4·q_dim per pair forward, 2x that backward
        fwd += 4.0 * dims.q_dim * (att_enc + att_dec)
        bwd += 8.0 * dims.q_dim * (att_enc * plan.encoder_grad + att_dec)
        # the head, at the positions predicting a target token
        head = 2.0 * dims.hidden * dims.vocab * n_tgt
        fwd += head
        bwd += head * (1 + plan.trains_backbone)
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd}


def plan_dict(plan: Optional[GenPlan]) -> Optional[dict]:
    """A plan as JSON-able settings."""
    if plan is None:
        return None
    return {"soft_prompt": plan.soft_prompt, "prefix": dict(plan.prefix), "trains_backbone": plan.trains_backbone,
            "lora_r": plan.lora_r, "lora_targets": list(plan.lora_targets), "encoder_grad": plan.encoder_grad}  # fmt: skip
