"""Harmfulness judges behind one protocol, chosen by a short spec string.

Harmful Score is "% of answers the judge flags", so the judge is the measuring instrument: the registry
makes the instrument an explicit, recorded choice ("default", "refusal", "hf-classifier:ID", ...) instead
of a hard-coded model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaccine.errors import SettingError
from vaccine.judges.base import BaseJudge, Judge
from vaccine.paths import vaccine_home
from vaccine.registry import Registry


def _pair(**kw: Any) -> Judge:
    from vaccine.judges.pair import PairJudge

    return PairJudge(**kw) if kw else _loaded_pair(str(vaccine_home()))


@functools.lru_cache(maxsize=2)
def _loaded_pair(home: str) -> Judge:
    """One default judge per process (and cache folder): a grid evaluates many cells, and loading checks
    the training data's hash, which takes seconds."""
    from vaccine.judges.pair import PairJudge

    return PairJudge()


def _refusal(**kw: Any) -> Judge:
    from vaccine.judges.refusal import RefusalJudge

    return RefusalJudge(**kw)


def _hf_classifier(target: str, **kw: Any) -> Judge:
    from vaccine.judges.hf_classifier import HFClassifierJudge

    return HFClassifierJudge(target, **kw)


def _guard(target: str, **kw: Any) -> Judge:
    from vaccine.judges.guard import GuardJudge

    return GuardJudge(target, **kw)


@dataclass(frozen=True)
class JudgeEntry:
    """How to build one kind of judge."""

    factory: Callable[..., Judge]
    takes_model: bool  # the spec is "<name>:<model id or path>"
    summary: str


# Judges by name (``--judge``; a spec is the name, or "name:<model id or path>").
JUDGES: Registry[JudgeEntry] = Registry("judge", "judge")
JUDGES.add("default", JudgeEntry(_pair, False, "offline three-way judge reading prompt and answer"))
JUDGES.add("embedding", JudgeEntry(_pair, False, "the earlier name of the default judge"))
JUDGES.add(
    "refusal", JudgeEntry(_refusal, False, "keyword refusal detector: any non-refusal counts as harmful")
)
JUDGES.add("hf-classifier", JudgeEntry(_hf_classifier, True, "a HF sequence-classification moderation model"))
JUDGES.add("guard", JudgeEntry(_guard, True, "a generative guard model (Llama Guard style)"))


def judge_choices() -> list[str]:
    return [f"{name}:<model id or path>" if entry.takes_model else name for name, entry in JUDGES.items()]


def check_judge_spec(spec: str) -> tuple[Any, bool, str]:
    """Validate a judge spec without building the judge (so a typo fails before any model is loaded);
    returns the factory, whether it takes a model, and that model."""
    name, sep, target = spec.partition(":")
    if name.strip() not in JUDGES:
        raise SettingError("judge", f"unknown judge '{spec}'; choose one of: {', '.join(judge_choices())}")
    entry = JUDGES[name]
    if entry.takes_model and not target.strip():
        raise SettingError("judge", f"'{name}' needs a model: '{name}:<model id or path>'")
    if not entry.takes_model and sep:
        raise SettingError("judge", f"'{name}' takes no ':' argument (got '{spec}')")
    return entry.factory, entry.takes_model, target.strip()


def get_judge(spec: str, **kw: Any) -> Judge:
    """Build a judge from its spec: "default", "refusal", "embedding", "hf-classifier:<id or path>",
    "guard:<id or path>"; keyword arguments go to the judge (threshold, batch_size, ...)."""
    factory, needs_target, target = check_judge_spec(spec)
    return factory(target, **kw) if needs_target else factory(**kw)


def judge_version(spec: str) -> str:
    """What identifies a judge's verdicts, recorded with every evaluation and part of its cache key: a
    retrained default judge gets a new version, so cached evaluations are not mixed with new ones."""
    factory, _, _ = check_judge_spec(spec)
    if factory is _pair:
        from vaccine.judges.pair import judge_version as pair_version

        return pair_version()
    return spec.strip()


__all__ = ["JUDGES", "BaseJudge", "Judge", "check_judge_spec", "get_judge", "judge_choices", "judge_version"]
