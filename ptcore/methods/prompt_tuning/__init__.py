from .config import PromptTuningConfig
from .model import PromptTuningEncoder

__all__ = ["PromptTuningConfig", "PromptTuningEncoder"]
