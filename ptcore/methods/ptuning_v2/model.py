import torch
import torch.nn as nn

from ...backbones import Backbone
from ..base import PromptEncoder
from ..common import make_deep_prefix, resolve_layers
from .config import PTuningV2Config


class PrefixEncoder(nn.Module):
    """Produces ``num_sets`` sets of per-layer prefixes: (num_sets, l, layers*2*H).

    Without reparameterization the prefixes *are* the parameters (l x 2 x layers x H each).
    With it, an MLP maps l trainable embeddings to them (P-Tuning v2's optional
    reparameterization; only the MLP output is needed at inference).

    Initialisation follows the reference code, whose prefix table is an ``nn.Embedding``
    (N(0, 1)) in both cases: the prefixes themselves, or the MLP's input tokens, start at
    N(0, ``init_std``²) with ``init_std`` = 1.0 by default. (A small std such as BERT's 0.02
    would leave the reparameterized prefix slots nearly identical at init: after the MLP their
    mean cosine is ~0.95.)
    """

    def __init__(self, config: PTuningV2Config, n_layers: int, hidden: int, num_sets: int = 1, token_dim: int | None = None):
        super().__init__()
        # hidden: one layer's key (or value) width, kv_heads x head_dim (the model width, but for
        # grouped-query attention and T5's d_kv); token_dim: the MLP's input width (default: hidden)
        l, out = config.prompt_length, n_layers * 2 * hidden
        self.reparameterize = config.reparameterize
        if config.reparameterize:
            self.tokens = nn.Parameter(torch.randn(num_sets, l, token_dim or hidden) * config.init_std)
            hidden = token_dim or hidden
            self.mlp = nn.Sequential(nn.Linear(hidden, config.prefix_hidden_size), nn.Tanh(), nn.Linear(config.prefix_hidden_size, out))
        else:
            self.prefix = nn.Parameter(torch.randn(num_sets, l, out) * config.init_std)

    def forward(self) -> torch.Tensor:
        return self.mlp(self.tokens) if self.reparameterize else self.prefix  # (S, l, layers*2*H)


def split_kv(flat: torch.Tensor, n_layers: int, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, l, layers*2*H) -> keys, values each (N, layers, heads, l, head_dim).

    Views, no copy: each layer's prefix is copied once, by the concatenation with the
    layer's own keys/values in the attention. ``unbind`` rather than ``x[0], x[1]``: its
    backward is one stack instead of a zero-filled full-size gradient per half.
    """
    n, l, d = flat.shape
    x = flat.view(n, l, n_layers, 2, heads, d // (n_layers * 2 * heads))
    keys, values = x.permute(3, 0, 2, 4, 1, 5).unbind(0)  # (2, N, layers, heads, l, head_dim) -> 2x
    return keys, values


class PTuningV2Encoder(PromptEncoder):
    def __init__(self, backbone: Backbone, config: PTuningV2Config):
        super().__init__(backbone, config)
        cfg = self.backbone.config
        self.dropout = nn.Dropout(config.prefix_dropout)
        if self.family.generative:
            # every attention site of the family (T5: encoder, decoder, cross), `depth` layers of each
            self.prefix_layers = {site: resolve_layers(config.depth, n) for site, n in self.family.prefix_sites(cfg).items()}
            self.kv_heads, head_dim = self.family.kv_dims(cfg)
            total = sum(len(v) for v in self.prefix_layers.values())
            self.prefix_encoder = PrefixEncoder(config, total, self.kv_heads * head_dim, token_dim=self.hidden_size)
            return
        self.layers = resolve_layers(config.depth, cfg.num_hidden_layers)
        self.prefix_encoder = PrefixEncoder(config, len(self.layers), cfg.hidden_size)
        self.deep = make_deep_prefix(self.backbone, self.layers)

    def prefix_kv(self, n: int):
        """Generative families: {site: (keys, values)}, each (N, layers of the site, kv_heads, l, head_dim)."""
        flat = self.dropout(self.prefix_encoder().expand(n, -1, -1))  # (N, l, all layers*2*kv*d), one mask per instance
        total = sum(len(v) for v in self.prefix_layers.values())
        keys, values = split_kv(flat, total, self.kv_heads)  # (N, total, kv, l, d) x2
        out, start = {}, 0
        for site, layers in self.prefix_layers.items():
            out[site] = (keys[:, start:start + len(layers)], values[:, start:start + len(layers)])
            start += len(layers)
        return out

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        n, t = input_ids.shape
        # dropout after the expand: one mask per instance, as the reference (which expands the
        # prefix tokens to the batch before its encoder and dropout)
        flat = self.dropout(self.prefix_encoder().expand(n, -1, -1))  # (N, l, layers*2*H)
        keys, values = split_kv(flat, len(self.layers), self.deep.heads)
        return self.deep(
            self.backbone,
            input_ids,
            attention_mask,
            self.token_types(token_type_ids, input_ids),
            self.position_ids(n, t, input_ids.device),
            keys,
            values,
        )  # (N,T,H)
