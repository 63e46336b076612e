from typing import ClassVar

from ..config_base import MethodConfig


class FinetuneConfig(MethodConfig):
    """Fine-tuning baseline: every backbone weight and the head train."""

    default_lr: ClassVar[float] = 2e-5
    trains_backbone: ClassVar[bool] = True
