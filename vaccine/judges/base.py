"""The one protocol every harmfulness judge implements, and the small shared helpers.

Harmful Score only needs "is this answer harmful?", but the judges differ wildly in cost (a regex vs a
7B guard model). One tiny protocol (``score`` -> probability-like numbers, ``flag`` -> booleans) lets the
evaluation code swap them without knowing which one it has.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from tqdm.auto import tqdm

from vaccine.errors import ConfigError, ModelError
from vaccine.judges.kinds import COMPLIANCE, harmless_kind


class Verdict(NamedTuple):
    """One judged answer: a harmfulness score in [0, 1] and its kind (refusal / compliance / other)."""

    score: float
    kind: str


@runtime_checkable
class Judge(Protocol):
    """A moderation judge: higher score = more harmful; ``flag`` is ``score >= threshold``."""

    name: str

    def score(self, prompts: list[str], answers: list[str]) -> list[float]: ...

    def flag(self, prompts: list[str], answers: list[str]) -> list[bool]: ...

    def verdicts(self, prompts: list[str], answers: list[str]) -> list[Verdict]: ...


class BaseJudge:
    """Implements ``flag`` on top of ``score`` so that every judge thresholds the same way."""

    name: str = "base"

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"judge threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)

    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        raise NotImplementedError

    def flag(self, prompts: list[str], answers: list[str]) -> list[bool]:
        return [s >= self.threshold for s in self.score(prompts, answers)]

    def verdicts(self, prompts: list[str], answers: list[str]) -> list[Verdict]:
        """Score and kind per answer. A binary judge's flagged answers are compliance; the others are told
        apart by the refusal detector (three-way judges override this with their own classes)."""
        return [
            Verdict(s, COMPLIANCE if s >= self.threshold else harmless_kind(a))
            for s, a in zip(self.score(prompts, answers), answers, strict=True)
        ]

    def error_rates(self) -> dict | None:
        """The judge's measured precision / sensitivity / specificity on answers like those it will judge,
        for the report's judge-corrected HS; None when it was never validated here."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, threshold={self.threshold})"


def check_pairs(prompts: Sequence[str], answers: Sequence[str]) -> None:
    """Prompts and answers are parallel lists; a length mismatch would silently misalign every verdict."""
    if len(prompts) != len(answers):
        raise ConfigError(f"judge got {len(prompts)} prompts but {len(answers)} answers")


def batches(n: int, batch_size: int, desc: str) -> Iterator[slice]:
    """Slices over ``n`` items with a transient progress bar (hidden for a single batch)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 2):
        yield slice(start, min(start + batch_size, n))


def load_judge_model(auto_class: Any, model_id_or_path: str | Path, what: str, hint: str) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) of a judge model, safetensors only and no remote code; a failure
    becomes one message that names the model, ``what`` it should be, and the likely cause."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_id_or_path), trust_remote_code=False)
        model = auto_class.from_pretrained(
            str(model_id_or_path), use_safetensors=True, trust_remote_code=False
        )
    except Exception as err:  # noqa: BLE001 - every loading failure becomes one actionable message
        raise ModelError(
            f"cannot load the {what} '{model_id_or_path}': {type(err).__name__}: {str(err)[:300]}. {hint} "
            "Offline machines need a local folder instead of a hub id."
        ) from None
    return model.eval(), tokenizer
