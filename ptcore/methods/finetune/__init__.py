from .config import FinetuneConfig
from .model import FinetuneEncoder

__all__ = ["FinetuneConfig", "FinetuneEncoder"]
