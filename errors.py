"""Errors every part of fairfront raises for bad user input.

A :class:`ConfigError` carries one line that names what was wrong and what is allowed; the CLI
prints exactly that line and exits with status 2, before anything is written to a study.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError"]


class ConfigError(ValueError):
    """A study-file key, a CLI argument or a model/data reference is not acceptable.

    Example:
        >>> raise ConfigError("objectives.bias", "tpr-gap", "one of: tpr_gap, accuracy_gap")
        Traceback (most recent call last):
        ...
        fairfront.errors.ConfigError: objectives.bias = 'tpr-gap' is not allowed: expected one of: tpr_gap, accuracy_gap
    """

    def __init__(self, key: str, value: object = None, allowed: str | None = None, *, message: str | None = None):
        self.key = key
        self.value = value
        self.allowed = allowed
        if message is None:
            message = f"{key} = {value!r} is not allowed: expected {allowed}"
        else:
            message = f"{key}: {message}"
        super().__init__(message)


class DataError(ValueError):
    """A data file is missing, malformed, or lacks a column the study file names."""
