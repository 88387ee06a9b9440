"""User-facing errors: each names the bad field or file and how to fix it.

Everything a user can get wrong (a config value, a data path, a checkpoint, a
storage directory) raises one of these *before* compute is spent
(`trainables.preflight`). The sweep CLI turns them into a short message and
exit code 2, with no traceback.
"""

from __future__ import annotations


class StarsweepError(ValueError):
    """Base class of every user error (a ValueError, as torch-uncertainty does)."""


class ConfigError(StarsweepError):
    """A trial config or sweep spec field has a bad value."""


class DataError(StarsweepError):
    """A dataset is missing, empty or in the wrong format."""


class CheckpointError(StarsweepError):
    """A pre-trained or saved checkpoint cannot be loaded."""


class StorageError(StarsweepError):
    """A directory the sweep or trial writes to is read-only, full, or not a directory."""
