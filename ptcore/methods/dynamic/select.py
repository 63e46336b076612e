"""Discrete choices for dynamic prompting: Gumbel straight-through sampling, the temperature
schedule, and the gradient estimator that turns a hard split point into a gradient for
*every* candidate split without assembling them.

Estimator (position). A BERT-family encoder is permutation-equivariant apart from its
absolute position (and segment) embeddings, so laying the input out as arrangement j,
``[CLS] P[j:] x P[:j] [SEP]``, is the *same computation* as keeping the current sequence and
giving every token and prompt vector the position id (and segment) it would have under j.
Write those added embeddings as a mixture over the l+1 arrangements, ``sum_j y_j PE_j``,
with ``y`` the straight-through one-hot (hard forward, softmax gradient). With ``y`` hard
the forward is exactly the chosen arrangement (built once, with
:func:`~ptcore.methods.common.insert_prompt`: one encoder pass), and
``dL/dy_j = sum_tokens g_tok . (pos_j(tok) + type_j(tok))``, ``g_tok`` being dL/d(input
embedding) at the token's current slot (the embedding layer adds word, position and segment
embeddings before its LayerNorm, so that is also the gradient to the position embedding
there). That is the first-order change of the loss when moving every token to where j puts
it. It costs two (T+l) x (T+l) x H products per instance in the backward, no extra encoder
pass. On a random tiny BERT it ranks the true losses of all l+1 arrangements with a
Spearman correlation of 0.8-0.9 per instance (tested), where the naive mixture of the l+1
assembled *sequences* (``<dL/dE, A_j>``, moving token contents between slots) is
uncorrelated with them. Gradients to the prompt vectors flow through the assembled
sequence as usual.

The DP reference code's own estimator is that naive mixture: ``estimator: mixture``
(:func:`ptcore.methods.dynamic.model.mixture_of_arrangements`) builds it as an option, with
the straight-through one-hot (the forward is still the hard choice) or, ``mixture_soft``, the
soft Gumbel sample (the forward mixes). It needs no position table, so it runs on DeBERTa too.

Estimator (length). Slot k is kept iff the chosen length exceeds k, i.e.
``mask_k = sum_{i: c_i > k} y_i`` (cumulative of the one-hot over ascending candidates).
The attention mask itself is the *hard* 0/1 mask (a masked slot is invisible: no attention,
whatever its vector), and the gradient enters through an exact no-op on the kept vectors,
``p_k + p_k.detach() * (mask_k - mask_k.detach())`` (value ``p_k`` bit for bit), so that
``dL/dmask_k = <dL/dp_k, p_k>``, i.e. the straight-through gradient of scaling slot k by its
mask. A masked slot has no first-order effect, so lengths longer than the current one get
the current one's signal and are reached through the Gumbel noise.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def temperature(step: int, total_steps: int, tau0: float, tau_min: float, anneal: str, rate: float = 3e-6) -> float:
    """Gumbel temperature at ``step`` of ``total_steps``: ``tau0`` at step 0, ``tau_min`` at the
    last step (``total_steps - 1``), and clamped there after.

    ``reference`` is the DP code's schedule, whatever the run's length: after each optimizer
    step s (1, 2, ...) it multiplies the temperature by ``exp(-rate * s)`` and floors it at
    ``tau_min``, i.e. ``tau0 * exp(-rate * step * (step + 1) / 2)`` after ``step`` steps
    (``tutorial/adap_ins_pos_main.py``: ``np.maximum(temp * np.exp(-ANNEAL_RATE * glb_step /
    args.aneal), temp_min)``, ANNEAL_RATE 3e-5, aneal 10: rate 3e-6, so 0.5 after ~680 steps)."""
    if anneal == "reference":
        return max(tau0 * math.exp(-rate * step * (step + 1) / 2), tau_min)
    p = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    if anneal == "exponential":
        return tau0 * (tau_min / tau0) ** p
    if anneal == "linear":
        return tau0 + (tau_min - tau0) * p
    if anneal == "cosine":
        return tau_min + 0.5 * (tau0 - tau_min) * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown anneal {anneal!r} (exponential, linear, cosine, reference)")


def sample_one_hot(logits: torch.Tensor, tau: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,C) logits -> (one-hot y (N,C), index (N,)).

    Training: Gumbel-Softmax straight-through (hard one-hot forward, soft gradient).
    Evaluation: deterministic argmax, no noise (``y`` then carries no gradient).
    """
    if training:
        y = F.gumbel_softmax(logits, tau=tau, hard=True)  # y_hard - y_soft.detach() + y_soft
        return y, y.detach().argmax(-1)
    index = logits.argmax(-1)
    return F.one_hot(index, logits.shape[-1]).to(logits.dtype), index


class Selector(nn.Module):
    """Logits over ``n`` options: learned per task, or per instance from the pooled input.

    Instance nets (``arch``):

    * ``linear`` (default): ``Linear(H, n)`` on the L2-normalized pooled representation
      (normalizing keeps the logits' step size under Adam independent of H); it starts at
      zero, i.e. uniform like the task-level logits.
    * ``linear_relu``: the DP reference's ``MLP_pos``, ``ReLU(Linear(H, n))`` on the pooled
      representation as it comes, torch's default init (``openprompt/prompts/soft_ins_pos_adaptive.py``).
    """

    def __init__(self, level: str, hidden: int, n: int, arch: str = "linear"):
        super().__init__()
        self.level, self.arch = level, arch
        if level == "task":
            self.logits = nn.Parameter(torch.zeros(n))
        elif level == "instance" and arch == "linear":
            self.net = nn.Linear(hidden, n)
            nn.init.zeros_(self.net.weight)
            nn.init.zeros_(self.net.bias)
        elif level == "instance" and arch == "linear_relu":
            self.net = nn.Sequential(nn.Linear(hidden, n), nn.ReLU())
        else:
            raise ValueError(f"selector: level must be 'task' or 'instance' and arch 'linear' or 'linear_relu', not {level!r}/{arch!r}")

    def forward(self, pooled: torch.Tensor | None, n: int) -> torch.Tensor:
        if self.level == "task":
            return self.logits.unsqueeze(0).expand(n, -1)  # (N,n)
        if self.arch == "linear_relu":
            return self.net(pooled)  # (N,n), >= 0
        return self.net(F.normalize(pooled, dim=-1))  # (N,n)


def arrangement_slots(attention_mask: torch.Tensor, l: int, splits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots of input tokens and prompt vectors for several split points at once.

    Same index arithmetic as :func:`~ptcore.methods.common.insert_prompt`, with a candidate
    axis: ``splits (N,J)`` -> ``tok (N,J,T)``, ``prm (N,J,l)``.
    """
    n, t = attention_mask.shape
    dev = attention_mask.device
    last = (attention_mask.sum(1) - 1).view(n, 1, 1)  # final [SEP]
    s = splits.unsqueeze(-1)  # (N,J,1)
    n_front = l - s
    pos = torch.arange(t, device=dev).view(1, 1, t)
    tok = torch.where(pos == 0, pos, torch.where(pos < last, pos + n_front, pos + l))  # (N,J,T)
    k = torch.arange(l, device=dev).view(1, 1, l)
    prm = torch.where(k >= s, 1 + k - s, last + n_front + k)  # (N,J,l)
    return tok, prm


def arrangement_scores(
    grad: torch.Tensor,  # (N, T+l, H) dL/d(assembled input embeddings)
    split: torch.Tensor,  # (N,) the split the sequence was assembled with
    attention_mask: torch.Tensor,  # (N, T)
    prompt_mask: torch.Tensor,  # (N, l) hard 0/1
    pos_table: torch.Tensor,  # (T+l, H) position embedding of each slot
    type_front: Optional[torch.Tensor] = None,  # (N, H) segment embedding of a prompt vector in front
    type_back: Optional[torch.Tensor] = None,  # (N, H) ... after the input
) -> torch.Tensor:
    """First-order score of every split j in 0..l -> (N, l+1).

    ``score[n, j] = sum_tokens g_tok . (pos_j(tok) + type_j(tok))`` where ``g_tok`` is the
    gradient at the token's current slot and ``pos_j`` / ``type_j`` the embeddings it would
    get under arrangement j. Padding and masked prompt slots are left out (padding sits at
    the same place under every arrangement; masked slots are invisible).
    """
    n, t = attention_mask.shape
    l = prompt_mask.shape[1]
    h = grad.shape[-1]
    splits = torch.arange(l + 1, device=grad.device).expand(n, l + 1)
    tok, prm = arrangement_slots(attention_mask, l, splits)  # (N,J,T), (N,J,l)
    cur = split.view(n, 1, 1)
    g_tok = grad.gather(1, tok.gather(1, cur.expand(n, 1, t)).squeeze(1).unsqueeze(-1).expand(n, t, h))  # (N,T,H)
    g_prm = grad.gather(1, prm.gather(1, cur.expand(n, 1, l)).squeeze(1).unsqueeze(-1).expand(n, l, h))  # (N,l,H)
    table = pos_table.to(grad.dtype).t()  # (H, T+l)
    am = attention_mask.to(grad.dtype).unsqueeze(-1)
    pm = prompt_mask.to(grad.dtype)
    s_tok = ((g_tok @ table).gather(2, tok.permute(0, 2, 1)) * am).sum(1)  # (N,J)
    s_prm = ((g_prm @ table).gather(2, prm.permute(0, 2, 1)) * pm.unsqueeze(-1)).sum(1)  # (N,J)
    scores = s_tok + s_prm
    if type_front is not None and type_back is not None:
        a_front = (g_prm * type_front.to(grad.dtype).unsqueeze(1)).sum(-1) * pm  # (N,l)
        a_back = (g_prm * type_back.to(grad.dtype).unsqueeze(1)).sum(-1) * pm
        front = torch.arange(l, device=grad.device).unsqueeze(0) >= splits[0].unsqueeze(1)  # (J,l): k in front under j
        scores = scores + a_front @ front.t().to(grad.dtype) + a_back @ (~front).t().to(grad.dtype)
    return scores


class _ArrangementTap(torch.autograd.Function):
    """Zeros in the forward; in the backward, the score of every split j as ``dL/dy_j``."""

    @staticmethod
    def forward(ctx, y, split, attention_mask, prompt_mask, pos_table, type_front, type_back):
        ctx.save_for_backward(split, attention_mask, prompt_mask, pos_table, type_front, type_back)
        n, t = attention_mask.shape
        return pos_table.new_zeros(n, t + prompt_mask.shape[1], pos_table.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        split, attention_mask, prompt_mask, pos_table, type_front, type_back = ctx.saved_tensors
        scores = arrangement_scores(grad, split, attention_mask, prompt_mask, pos_table, type_front, type_back)
        return (scores,) + (None,) * 6


def arrangement_tap(
    y: torch.Tensor,  # (N, l+1) straight-through one-hot over splits
    split: torch.Tensor,  # (N,) its argmax, the arrangement actually assembled
    attention_mask: torch.Tensor,
    prompt_mask: torch.Tensor,
    pos_table: torch.Tensor,
    type_front: Optional[torch.Tensor] = None,
    type_back: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """A zero (N, T+l, H) tensor to add to the assembled input embeddings: the forward is
    unchanged (bit for bit) and ``y`` gets the position-embedding straight-through gradient."""
    detach = lambda x: None if x is None else x.detach()  # noqa: E731
    return _ArrangementTap.apply(
        y, split, attention_mask, prompt_mask, pos_table.detach(), detach(type_front), detach(type_back)
    )


def mask_tap(x: torch.Tensor, soft_mask: torch.Tensor) -> torch.Tensor:
    """``x`` (N,l,D) unchanged in value; gradient ``<dL/dx_k, x_k>`` to ``soft_mask`` (N,l)."""
    return x + x.detach() * (soft_mask - soft_mask.detach()).unsqueeze(-1).to(x.dtype)
