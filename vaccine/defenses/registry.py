"""One registry for every defense, alignment-stage and fine-tune-stage, selectable by name.

A defense is a dataclass whose fields are its knobs (lambda, m, ...), registered with
``@register("name", stage=...)``, as in lm-eval's and PEFT's registries. Adding an alignment-stage method is
one package ``vaccine/methods/<name>/`` plus an import line in ``vaccine/methods/__init__.py``; adding a
fine-tune-stage defense is one module ``vaccine/defenses/<name>.py`` plus an import line in
``vaccine/defenses/__init__.py``. Importing :mod:`vaccine.defenses` registers both kinds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from vaccine.errors import ConfigError

Stage = Literal["align", "finetune"]


@dataclass(frozen=True)
class DefenseInfo:
    name: str
    stage: Stage
    cls: type
    summary: str


DEFENSES: dict[str, DefenseInfo] = {}


def register(name: str, stage: Stage):
    """Class decorator: make a defense selectable by ``name`` from the CLI and configs."""

    def wrap(cls: type) -> type:
        if name in DEFENSES:
            raise ValueError(f"defense {name!r} is registered twice")
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        DEFENSES[name] = DefenseInfo(name, stage, cls, summary)
        cls.name = name
        return cls

    return wrap


def names(stage: Stage | None = None) -> list[str]:
    return sorted(n for n, info in DEFENSES.items() if stage is None or info.stage == stage)


def knobs(name: str) -> dict[str, Any]:
    """A defense's knobs and their defaults (for the README, `--help` and validation)."""
    return {f.name: f.default for f in dataclasses.fields(get(name).cls) if f.init}


def get(name: str, stage: Stage | None = None) -> DefenseInfo:
    info = DEFENSES.get(name)
    if info is None or (stage is not None and info.stage != stage):
        flag = {"align": "--method", "finetune": "--defense"}.get(stage or "", "defense")
        raise ConfigError(f"unknown {flag} {name!r}; choose one of: {', '.join(names(stage))}")
    return info


def _coerce(name: str, field: dataclasses.Field, value: Any) -> Any:
    """CLI values arrive as strings: convert them to the type of the field's default."""
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
        raise ConfigError(f"{name}: {field.name} must be a {kind.__name__}; got {value!r}") from err


def build(name: str, stage: Stage | None = None, **values: Any) -> Any:
    """Instantiate a defense; unknown knobs and bad values are errors that name them."""
    info = get(name, stage)
    fields = {f.name: f for f in dataclasses.fields(info.cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{name} has no knob {unknown[0]!r}; its knobs: {', '.join(fields) or '(none)'}")
    return info.cls(**{key: _coerce(name, fields[key], value) for key, value in values.items()})


def parse_knobs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``["lam=10", "m=50"]`` -> ``{"lam": "10", "m": "50"}``; a malformed pair names the flag."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE; got {pair!r}")
        out[key.strip()] = value.strip()
    return out
