import torch
import torch.nn as nn

from ...backbones import Backbone
from ..base import PromptEncoder
from ..common import gather_tokens, insert_prompt
from .config import PromptTuningConfig


def init_prompt(backbone: nn.Module, length: int, how: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(length, H) initial prompt vectors."""
    emb = backbone.get_input_embeddings().weight  # (V, H)
    if how == "vocab":
        ids = torch.randint(0, emb.shape[0], (length,), generator=generator)
        return emb[ids].detach().clone()
    if how == "vocab_first":  # OpenPrompt's SoftTemplate (the DP reference's): the first l rows
        return emb[:length].detach().clone()
    return torch.randn(length, emb.shape[1], generator=generator) * 0.02


class PromptTuningEncoder(PromptEncoder):
    """``[CLS] P x [SEP]`` with a trainable P of ``prompt_length`` vectors; frozen backbone.

    The prompt is a sequence of real input tokens, so positions run 0..T+l-1 over the
    assembled sequence (the input after the prompt sits l positions later, exactly as if
    l tokens had been typed there).
    """

    def __init__(self, backbone: Backbone, config: PromptTuningConfig):
        super().__init__(backbone, config)
        self.prompt = nn.Parameter(init_prompt(self.backbone, config.prompt_length, config.init))  # (l,H)

    @property
    def extra_tokens(self) -> int:
        return self.config.prompt_length

    def soft_prompt(self, n: int) -> torch.Tensor:
        """Generative families: the prompt in front of every row (T5: of the encoder input). (N,l,H)"""
        return self.prompt.unsqueeze(0).expand(n, -1, -1)

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        n, t = input_ids.shape
        token_type_ids = self.token_types(token_type_ids, input_ids)
        words = self.backbone.get_input_embeddings()(input_ids)  # (N,T,H)
        prompt = self.prompt.unsqueeze(0).expand(n, -1, -1)  # (N,l,H)
        split = torch.zeros(n, dtype=torch.long, device=input_ids.device)  # whole prompt in front
        embeds, mask, types, index = insert_prompt(words, attention_mask, token_type_ids, prompt, split)
        out = self.backbone(
            inputs_embeds=embeds,  # (N,T+l,H)
            attention_mask=mask,
            token_type_ids=types,
            position_ids=self.position_ids(n, t + self.extra_tokens, input_ids.device),
        )
        return gather_tokens(out.last_hidden_state, index)  # (N,T,H)
