"""The exception tree of :mod:`model_training`.

Third-party errors (pandas, OSError, ...) are translated into these where files are
read, so every message names the file or record and the reason::

    ModelTrainingError
    ├── DatasetError     a table or file of the dataset is missing, unreadable or malformed
    └── ConfigError      a configuration file is missing or invalid
"""

from __future__ import annotations


class ModelTrainingError(Exception):
    """Base of every error raised by :mod:`model_training`."""


class DatasetError(ModelTrainingError):
    """A dataset table or file cannot be used; names the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ConfigError(ModelTrainingError):
    """A configuration file is missing or invalid."""
