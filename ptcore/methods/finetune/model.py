import torch

from ..base import PromptEncoder


class FinetuneEncoder(PromptEncoder):
    """The plain backbone, all weights trainable."""

    def encode(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        n, t = input_ids.shape
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=self.token_types(token_type_ids, input_ids),
            position_ids=self.position_ids(n, t, input_ids.device),
        )
        return out.last_hidden_state  # (N,T,H)
