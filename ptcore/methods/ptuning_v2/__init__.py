from .config import PTuningV2Config
from .model import PTuningV2Encoder, PrefixEncoder

__all__ = ["PTuningV2Config", "PTuningV2Encoder", "PrefixEncoder"]
