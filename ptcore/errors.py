"""User-facing errors.

Every error a user can cause (bad config, unknown name, missing file, NaN loss) is a
``PtcoreError``: the CLI prints its message on one line and exits non-zero, without a
traceback. Anything else is a bug and keeps its traceback.
"""


class PtcoreError(Exception):
    """An error caused by user input; its message says what is wrong and how to fix it."""


class ConfigError(PtcoreError):
    """A configuration value is invalid."""


class DataError(PtcoreError):
    """A data file is missing or malformed."""


class TrainingError(PtcoreError):
    """Training diverged (e.g. a NaN loss)."""
