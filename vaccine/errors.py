"""Errors that carry enough context (file, line, field, flag) for a user to fix their input."""

from __future__ import annotations


class VaccineError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero."""


class DataError(VaccineError, ValueError):
    """A data file or data source is missing, unreadable or malformed."""


class ConfigError(VaccineError, ValueError):
    """A configuration value or command-line flag is invalid."""


class SettingError(ConfigError):
    """One setting has an invalid value. The message names the setting by its field name; the front end
    that read it (the CLI, a grid YAML) renders that name as the user wrote it: :meth:`written_as`."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem

    def written_as(self, name: str) -> SettingError:
        """The same error with the setting spelled ``name`` (``--num-samples``, ``demo.yaml: align.lr``)."""
        renamed = SettingError(self.setting, self.problem)
        renamed.args = (f"{name}: {self.problem}",)
        return renamed


class ModelError(VaccineError, ValueError):
    """A model or adapter cannot be found or loaded safely."""


class StorageError(VaccineError, OSError):
    """A result could not be written (disk full, read-only, no permission); earlier results are intact."""
