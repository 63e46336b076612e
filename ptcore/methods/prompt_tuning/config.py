from typing import Literal

from pydantic import Field

from ..config_base import MethodConfig


class PromptTuningConfig(MethodConfig):
    """Shallow prompt tuning (Lester et al., 2021): a soft prompt on the input embeddings only."""

    prompt_length: int = Field(20, ge=1, le=512, description="soft prompt tokens inserted after [CLS]")
    # 'vocab': start from the embeddings of random vocabulary tokens (Lester et al.'s best init);
    # 'vocab_first': the first l rows of the embedding table (OpenPrompt's SoftTemplate, as the DP reference);
    # 'random': N(0, 0.02^2) like BERT's own embedding init
    init: Literal["vocab", "vocab_first", "random"] = "vocab"
