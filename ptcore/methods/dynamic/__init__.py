"""Dynamic prompting (Yang et al., 2023) for encoders: per-task or per-instance choice of the
prompt's position, length and (pool) contents, over shallow or deep prompts."""

from .config import DynamicConfig
from .model import DynamicEncoder

__all__ = ["DynamicConfig", "DynamicEncoder", "register_dynamic"]


def register_dynamic(register) -> None:
    register(
        "dynamic",
        DynamicConfig,
        DynamicEncoder,
        "dynamic prompting: Gumbel-picked prompt position/length + instance prompt pool, shallow or deep (Yang et al. 2023)",
    )
