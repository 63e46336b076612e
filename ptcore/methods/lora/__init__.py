from .config import LoraConfig
from .model import LoraEncoder, inject_lora

__all__ = ["LoraConfig", "LoraEncoder", "inject_lora"]
