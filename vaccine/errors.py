"""Errors that carry enough context (file, line, field, flag) for a user to fix their input."""

from __future__ import annotations


class VaccineError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class DataError(VaccineError, ValueError):
    """A data file or data source is missing, unreadable or malformed."""


class ConfigError(VaccineError, ValueError):
    """A configuration value or command-line flag is invalid."""


class ModelError(VaccineError, ValueError):
    """A model or adapter cannot be found or loaded safely."""


class StorageError(VaccineError, OSError):
    """A result could not be written (disk full, read-only, no permission); earlier results are intact."""
