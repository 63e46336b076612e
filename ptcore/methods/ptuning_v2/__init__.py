from .config import PTuningV2Config

__all__ = ['PTuningV2Config', 'PTuningV2Encoder', 'PrefixEncoder']


def __getattr__(name: str):
    """The encoder (torch) is imported on first use, so the config alone loads without torch."""
    if name in ('PTuningV2Encoder', 'PrefixEncoder'):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
