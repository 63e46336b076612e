"""Task declarations, their registry and data loading (see :mod:`ptcore.tasks.base`)."""

from .base import TaskSpec
from .io import load_splits
from .registry import TASKS, get_task

__all__ = ["TASKS", "TaskSpec", "get_task", "load_splits"]
