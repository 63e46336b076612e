from .config import LoraConfig

__all__ = ['LoraConfig', 'LoraEncoder', 'inject_lora']


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('LoraEncoder', 'inject_lora'):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
