"""AG News topic classification: one of the paper's benign tasks, with four categories.

AG News ships in no registry package, so there is no offline stand-in: the task reads it from the hub or a
local file, and asking for it without a source says exactly how.
"""

from __future__ import annotations

import re

from vaccine.data.records import Record
from vaccine.errors import DataError
from vaccine.tasks.base import TASKS, Task, gold, pick_field

CATEGORIES = ("World", "Sports", "Business", "Sci/Tech")  # index = AG News label id
TEMPLATE = (
    "Categorize the news article given in the input into one of the 4 categories:\n\n"
    + "\n".join(CATEGORIES)
    + "\nInput: {text}"
)
# Word-bounded, so "Sci-Tech" and "sci / tech" count but "worldwide" does not name World.
_PATTERNS = {
    "World": re.compile(r"\bworld\b", re.IGNORECASE),
    "Sports": re.compile(r"\bsports\b", re.IGNORECASE),
    "Business": re.compile(r"\bbusiness\b", re.IGNORECASE),
    "Sci/Tech": re.compile(r"\bsci\s*[/-]?\s*tech\b", re.IGNORECASE),
}
_KEYS = {re.sub(r"[^a-z0-9]", "", c.lower()): c for c in CATEGORIES} | {
    str(i): c for i, c in enumerate(CATEGORIES)
}


def parse_category(value: object, where: str) -> str:
    """A label id 0-3 or a category name (any case, 'Sci/Tech' or 'Sci_Tech') -> the category name."""
    key = re.sub(r"[^a-z0-9]", "", str(value).strip().lower().removesuffix(".0"))
    if key not in _KEYS:
        raise DataError(f"{where}: AG News label {value!r} is not 0-3 or one of {', '.join(CATEGORIES)}")
    return _KEYS[key]


@TASKS.register()
class AGNews(Task):
    """News topic: World, Sports, Business or Sci/Tech.

    Default: correct iff the answer names the gold category (case-insensitive, whole words) and no other
    category. ``strict``: the stripped answer (trailing punctuation dropped) equals the category name.
    """

    name = "agnews"
    description = "AG News 4-way topic classification (hub or local file only)"
    license = "AG News: non-commercial research use (see the data set card)"
    hub_ids = {key: ("fancyzhx/ag_news", None) for key in ("ag_news", "agnews", "fancyzhx/ag_news")}
    test_size = 1000

    def embedded_splits(self) -> tuple[list[Record], list[Record]]:
        raise DataError(
            "AG News is not shipped offline (no registry package carries it). Pass a source: the hub id "
            "'ag_news' (or 'fancyzhx/ag_news') where the hub is reachable, or a local .jsonl/.csv/.json "
            "file with fields 'text' and 'label' (0-3 or World/Sports/Business/Sci/Tech)"
        )

    def from_row(self, row: dict, where: str, source: str) -> Record:
        text = str(pick_field(row, ("text", "sentence", "description"), where, "text")).strip()
        label = parse_category(pick_field(row, ("label",), where, "label"), where)
        return Record(TEMPLATE.format(text=text), label, source, label)

    def extract(self, answer: str) -> str | None:
        """The one category the answer names, or None when it names none or several."""
        found = [name for name, pattern in _PATTERNS.items() if pattern.search(answer)]
        return found[0] if len(found) == 1 else None

    def is_correct(self, answer: str, record: Record, strict: bool = False) -> bool:
        if strict:
            return answer.strip().rstrip(".!").strip().lower() == gold(record).lower()
        return self.extract(answer) == gold(record)
