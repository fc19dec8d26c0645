"""One registry type for everything chosen by name: alignment methods, fine-tune defenses, tasks, judges and
built-in data splits (lm-eval's and PEFT's pattern: register once, look up by name).

A registry is a read-only mapping from name to entry. Looking up an unknown name raises a
:class:`~vaccine.errors.SettingError` on the setting that holds the name (``method``, ``defense``, ``task``,
...) and lists the choices, so the CLI says ``--method: unknown ...`` and a grid ``methods[..].align.method``.
Entries that are dataclasses (methods, defenses) are built with their knobs by :meth:`Registry.build`,
which checks every knob name and converts strings from the command line to the knob's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from vaccine.errors import ConfigError, SettingError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one ``kind`` by name; ``setting`` is the setting that names one (for errors)."""

    def __init__(self, kind: str, setting: str, normalize: Callable[[str], str] = str.strip) -> None:
        self.kind = kind
        self.setting = setting
        self._normalize = normalize
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        key = self._normalize(name)
        if key in self._entries and self._entries[key] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[key] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget an entry (a plug-in that is unloaded, a test's throwaway entry)."""
        del self._entries[self._normalize(name)]

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Class decorator: register under ``name`` (default: the class's own ``name``) and set ``name``
        on the class, so an instance knows what it was chosen as."""

        def wrap(cls: T) -> T:
            chosen = name if name is not None else cls.name  # type: ignore[attr-defined]
            cls.name = chosen  # type: ignore[attr-defined]
            return self.add(chosen, cls)

        return wrap

    def lookup(self, name: str) -> T:
        """The entry named ``name``; an unknown name is an error that lists the choices."""
        key = self._normalize(name)
        if key not in self._entries:
            raise SettingError(
                self.setting, f"unknown {self.kind} {name!r}; choose one of: {', '.join(self)}"
            )
        return self._entries[key]

    def summary(self, name: str) -> str:
        """The first line of an entry's docstring (for listings and ``--help``)."""
        doc = getattr(self.lookup(name), "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def knobs(self, name: str) -> dict[str, Any]:
        """A dataclass entry's knobs and their defaults (for the README, ``--help`` and validation)."""
        return {f.name: f.default for f in dataclasses.fields(self.lookup(name)) if f.init}

    def build(self, name: str, **values: Any) -> Any:
        """Instantiate a dataclass entry; unknown knobs and bad values are errors that name them."""
        cls = self.lookup(name)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            known = ", ".join(fields) or "(none)"
            raise ConfigError(f"{name} has no knob {unknown[0]!r}; its knobs: {known}")
        return cls(**{key: _coerce(name, fields[key], value) for key, value in values.items()})

    def __getitem__(self, name: str) -> T:
        return self._entries[self._normalize(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def _coerce(owner: str, field: dataclasses.Field, value: Any) -> Any:
    """Knob values from the command line arrive as strings: convert them to the type of the default."""
    if not isinstance(value, str) or field.default is dataclasses.MISSING or field.default is None:
        return value
    kind = type(field.default)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except ValueError as err:
        raise ConfigError(f"{owner}: {field.name} must be a {kind.__name__}; got {value!r}") from err
