from typing import Optional, Union

from pydantic import Field

from ..config_base import MethodConfig


class PTuningV2Config(MethodConfig):
    """P-Tuning v2 (Liu et al., ACL 2022): trainable key/value prefixes at every (or some) layer."""

    prompt_length: int = Field(16, ge=1, le=1024, description="prefix key/value slots per prompted layer")
    # None: every layer; k: the top k layers; [i, j, ...]: exactly those layers (0 = bottom)
    depth: Optional[Union[int, list[int]]] = None
    reparameterize: bool = Field(False, description="produce the prefixes with an MLP (prefix-tuning style)")
    prefix_hidden_size: int = Field(512, ge=1, description="hidden width of the reparameterization MLP")
    prefix_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the prefix keys/values, one mask per instance")
    # std of the initial prefix table: the prefixes themselves, or with reparameterization the
    # MLP's input tokens (the reference code's nn.Embedding default, 1.0, in both cases)
    init_std: float = Field(1.0, gt=0.0, description="std of the initial prefixes (or of the reparameterization's input tokens)")
