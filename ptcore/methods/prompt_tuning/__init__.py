from .config import PromptTuningConfig

__all__ = ['PromptTuningConfig', 'PromptTuningEncoder']


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('PromptTuningEncoder',):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
