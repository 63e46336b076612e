"""A method's typed options (pydantic, no torch): what ``orchestrate ls methods`` and study
validation read without loading a model library."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class MethodConfig(BaseModel):
    """Options of one tuning method; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # default learning rate when the run does not set one (prompts want much larger ones)
    default_lr: ClassVar[float] = 1e-2
    # True: the backbone's own weights are trained (fine-tuning)
    trains_backbone: ClassVar[bool] = False
    # options added after runs were recorded: hashed only where they differ from these
    # defaults, so earlier runs keep their config hashes (ptcore.config.hashed_settings)
    hash_only_if_set: ClassVar[dict] = {}

    @classmethod
    def hashed_options(cls, options: dict) -> dict:
        """The options a config hash covers (``ptcore.config.hashed_settings``): all, less those of
        :attr:`hash_only_if_set` at their listed value. A method whose option is moot under another
        (and so must not split hashes) drops it here too."""
        return {k: v for k, v in options.items() if cls.hash_only_if_set.get(k, object()) != v}

    def family_problem(self, family: str, model_type: str) -> str | None:
        """Why these options cannot run on a backbone of ``family`` (ptcore.families), in one
        line, or None. Read before any weights load (``ptcore.model.check_run``)."""
        return None
