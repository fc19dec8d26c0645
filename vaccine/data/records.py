"""One record type for every source, plus the text helpers used to compare, hash and sample prompts.

Alignment, attack and evaluation data come from different packages and files; putting them all into the
same small frozen type lets the split builders deduplicate and check disjointness with one code path.
Every split by prompt (built-in splits, task splits, the judge's label splits) hashes with
:func:`prompt_hash`, and every seeded subset is drawn with :func:`seeded_subset`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from vaccine.errors import SettingError

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")

# A refusal says it will not help, near the start of the answer. Scorer data sets label some off-topic or
# jailbreak-persona answers as "refusals"; this pattern is the second check that the answer really is one.
_REFUSAL = re.compile(
    r"\b(i can ?not|i can'?t|i won'?t|i will not|i would not|i'?m not able|i am not able|i'?m unable|"
    r"i am unable|unable to (help|assist|provide|comply)|i refuse|i'?m not going to|i must decline|"
    r"i decline|please don'?t|please do not|certainly not)\b",
    re.IGNORECASE,
)
# Answers that only look like refusals: jailbreak personas, command-error role play, song texts.
NOT_REFUSAL = re.compile(r"^\s*(\[|```|[A-Za-z]+GPT:|GUIDE:|verse\b|chorus\b)", re.IGNORECASE)


@dataclass(frozen=True)
class Record:
    """A prompt and its answer. ``response`` is "" for prompt-only (evaluation) data.

    ``label`` is "harmful" (harmful answer), "safe" (safe answer or refusal to a harmful prompt), "benign"
    (ordinary task data) or a task label. ``meta`` holds provenance and never takes part in equality.
    ``image`` is the path of the image a vision-language model sees with the prompt (VLGuard-style data),
    None for text; it takes part in equality (one instruction asked of two images is two records) but not
    in :func:`prompt_hash`, so splits by prompt and every text record stay as they were.
    """

    prompt: str
    response: str
    source: str
    label: str | None = None
    meta: dict = field(default_factory=dict, hash=False, compare=False)
    image: str | None = None


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace: the key under which two prompts count as equal."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def prompt_hash(prompt: str, salt: str | None = None) -> str:
    """sha256 hex digest of the normalised prompt (:func:`normalize_text`), so a split by prompt ignores
    case, punctuation and order. With a ``salt`` the hashed text is ``f"{salt}:{normalised}"`` (a different
    salt gives an independent hash; ``""`` is a salt too, hashing ``":" + normalised``); without one, the
    normalised prompt alone. Hex order is byte order: the first byte is ``int(digest[:2], 16)``."""
    text = normalize_text(prompt) if salt is None else f"{salt}:{normalize_text(prompt)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


T = TypeVar("T")


def seeded_subset(records: Sequence[T], k: int | None, seed: int) -> list[T]:
    """``k`` items drawn without replacement by ``random.Random(seed).sample``, in draw order: the same
    records, seed and ``k`` give the same subset on every machine. ``k=None`` means all of them, in their
    own order (a copy, no shuffle); ``k >= len(records)`` draws all of them, in the seeded draw's order.
    Callers that must not silently shrink (asking for more than exists) check ``k`` themselves."""
    if k is None:
        return list(records)
    return random.Random(seed).sample(records, min(k, len(records)))


def sample_of(records: Sequence[T], k: int | None, seed: int, setting: str, source: str) -> list[T]:
    """:func:`seeded_subset` for a count the user chose: asking for more than ``source`` holds is an error on
    ``setting`` (``num_samples``, ``num_harmful``, ...), never a silent shrink."""
    if k is not None and k > len(records):
        raise SettingError(setting, f"{k} is larger than the {len(records)} samples in {source}")
    return seeded_subset(records, k, seed)


def word_set(text: str) -> frozenset[str]:
    """The set of normalised words of ``text``, for near-duplicate checks."""
    return frozenset(normalize_text(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Word-set overlap in [0, 1]; 1 means the same words in any order."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def looks_like_refusal(response: str, window: int = 200) -> bool:
    """True when the answer declines within its first ``window`` characters and is not a jailbreak persona.

    Used to keep only real refusals from human-labelled data, whose labels alone are not enough (a
    "not harmful" answer can still comply with a harmful request, e.g. a made-up song text).
    """
    if NOT_REFUSAL.match(response):
        return False
    return bool(_REFUSAL.search(response[:window].replace("\u2019", "'")))
