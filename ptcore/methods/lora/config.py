from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator

from ..config_base import MethodConfig


class LoraConfig(MethodConfig):
    """LoRA (Hu et al., 2022) through huggingface/peft: a rank-``r`` update ``B·A·alpha/r`` beside
    the frozen weight of each targeted linear layer; the backbone stays frozen."""

    default_lr: ClassVar[float] = 5e-4
    r: int = Field(8, ge=1, le=1024, description="rank of each update")
    alpha: float = Field(16.0, gt=0, description="scale: the update is multiplied by alpha / r")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the LoRA branch's input")
    target_modules: Optional[tuple[str, ...]] = Field(
        None, description="names of the linear layers to adapt (default: peft's choice for the family: query and value; "
        "DeBERTa: query_proj and value_proj)"
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="also train biases: of every layer, or of the adapted ones")
    train_layernorm: bool = Field(False, description="also train the backbone's LayerNorm weights and biases")
    layers: Optional[tuple[int, ...]] = Field(None, description="adapt only these layer indices (default: all)")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _names(cls, v):
        if v is None:
            return v
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if not v:
            raise ValueError("give at least one module name, or leave target_modules out for the family's default")
        return tuple(v)
