"""The benign fine-tuning task interface, its registry, and the shared source and split plumbing.

A harmful fine-tuning attack hides harmful samples inside a user's *benign* task; Fine-tune Accuracy (FA)
on that task is the half of the trade-off a defense must not destroy. Every task therefore answers the same
four questions: which records to train and test on, how to pull the answer out of a generation, whether it
is right, and the accuracy over a test set. Sources (embedded stand-in, local file, hub id) are resolved
here once, so a new task is one file with the ``@TASKS.register()`` decorator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from vaccine.data.files import FILE_TYPES, file_rows, hub_rows
from vaccine.data.records import Record, normalize_text, prompt_hash
from vaccine.errors import ConfigError, DataError
from vaccine.registry import Registry

SPLITS = ("train", "test")
SEED = 0
SPLIT_PLACEHOLDER = "{split}"

HubRef = tuple[str, str | None]  # (hub id or local folder, config name)


# ---------------------------------------------------------------- deterministic split
def _split_key(record: Record, seed: int) -> str:
    """Seeded by the normalised prompt, not by position, so a split survives reordering of the source."""
    return prompt_hash(record.prompt, str(seed))


def dedupe(records: list[Record]) -> list[Record]:
    """First record per normalised prompt: a prompt in both train and test would inflate accuracy."""
    seen: set[str] = set()
    kept = []
    for record in records:
        key = normalize_text(record.prompt)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def split_records(
    records: list[Record], test_size: int, seed: int = SEED
) -> tuple[list[Record], list[Record]]:
    """(train, test): dedupe, seeded shuffle, the first ``test_size`` go to test. Same input, same split."""
    shuffled = sorted(dedupe(records), key=lambda r: _split_key(r, seed))
    return shuffled[test_size:], shuffled[:test_size]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def pick_field(row: dict, names: tuple[str, ...], where: str, what: str) -> object:
    """The first present, non-empty field of ``names``; a DataError lists the fields the row does have."""
    for name in names:
        value = row.get(name)
        if value is not None and str(value).strip() != "":
            return value
    raise DataError(f"{where}: no {what} field ({' / '.join(names)}); fields present: {sorted(row)}")


# ---------------------------------------------------------------- the task interface
class Task(ABC):
    """A benign task: records per split, answer extraction, and a scorer giving Fine-tune Accuracy.

    Subclasses set the class attributes, implement ``embedded_splits`` (the offline stand-in),
    ``from_row`` (one file or hub row -> Record) and ``is_correct``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    license: ClassVar[str]
    # Known short ids -> (hub id, config). Any other 'owner/name' or 'hf:ID' is passed through as is.
    hub_ids: ClassVar[dict[str, HubRef]] = {}
    # Our split -> the hub split that holds it; a split missing here is carved out of the hub's train split.
    hub_splits: ClassVar[dict[str, str]] = {"train": "train", "test": "test"}
    # Test size when one file / one hub split has to be split here (capped at a fifth of the rows).
    test_size: ClassVar[int] = 1000

    # ------------------------------------------------------------ records
    def records(self, split: str, source: str | None = None) -> list[Record]:
        """The ``split`` ("train" / "test") records from the embedded stand-in (``source=None``), a local
        file (``{split}`` in the path picks one file per split), a local data set folder, or a hub id."""
        check_split(split)
        if source is None:
            train, test = self.embedded_splits()
            return list(train if split == "train" else test)
        return self._from_source(split, str(source))

    @abstractmethod
    def embedded_splits(self) -> tuple[list[Record], list[Record]]:
        """(train, test) of the stand-in that ships offline; raise DataError where there is none."""

    @abstractmethod
    def from_row(self, row: dict, where: str, source: str) -> Record:
        """One raw row -> Record; DataError naming ``where`` for a row that cannot be used."""

    def heldout_size(self, n: int) -> int:
        """How many of ``n`` rows to hold out when this code has to make the split itself."""
        return min(self.test_size, max(1, n // 5))

    def _from_source(self, split: str, source: str) -> list[Record]:
        if SPLIT_PLACEHOLDER in source:
            path = _existing_file(Path(source.replace(SPLIT_PLACEHOLDER, split)).expanduser())
            return self._to_records(file_rows(path), f"file:{path.name}")
        path = Path(source).expanduser()
        if path.is_file():
            return self._split_here(split, self._to_records(file_rows(path), f"file:{path.name}"))
        if path.is_dir():
            return self._from_hub(split, (str(path), None), f"hub:{path.name}")
        if path.suffix.lower() in FILE_TYPES or source.startswith((".", "/", "~")):
            _existing_file(path)
        return self._from_hub(split, self.hub_ref(source), f"hub:{source.removeprefix('hf:')}")

    def hub_ref(self, source: str) -> HubRef:
        """Resolve a hub spelling: a known short id, 'hf:ID' or 'owner/name'."""
        key = source.removeprefix("hf:")
        if key in self.hub_ids:
            return self.hub_ids[key]
        if source.startswith("hf:") or "/" in source:
            return key, None
        known = ", ".join(sorted(self.hub_ids)) or "none"
        raise DataError(
            f"unknown source {source!r} for task '{self.name}': not a local file or folder, not a hub id "
            f"(owner/name or hf:ID); known short ids: {known}"
        )

    def _from_hub(self, split: str, ref: HubRef, label: str) -> list[Record]:
        if split in self.hub_splits:
            return self._to_records(hub_rows(ref[0], self.hub_splits[split], ref[1]), label)
        return self._split_here(
            split, self._to_records(hub_rows(ref[0], self.hub_splits["train"], ref[1]), label)
        )

    def _to_records(self, rows: list[tuple[str, dict]], source: str) -> list[Record]:
        return [self.from_row(row, where, source) for where, row in rows]

    def _split_here(self, split: str, records: list[Record]) -> list[Record]:
        train, test = split_records(records, self.heldout_size(len(records)))
        return train if split == "train" else test

    # ------------------------------------------------------------ scoring
    def extract(self, answer: str) -> str | None:
        """The task answer inside a model generation, or None when there is none. Default: stripped text."""
        text = answer.strip()
        return text or None

    @abstractmethod
    def is_correct(self, answer: str, record: Record, strict: bool = False) -> bool:
        """Whether a generation answers ``record`` correctly; ``strict`` demands the exact answer format."""

    def accuracy(self, answers: list[str], records: list[Record], strict: bool = False) -> float:
        """Fine-tune Accuracy in percent (0-100): answers[i] is the model's generation for records[i]."""
        if len(answers) != len(records):
            raise ValueError(f"{len(answers)} answers for {len(records)} records: lengths must match")
        if not records:
            raise ValueError("no records to score")
        hits = sum(self.is_correct(a, r, strict=strict) for a, r in zip(answers, records, strict=True))
        return 100.0 * hits / len(records)


def _existing_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def gold(record: Record) -> str:
    """The gold label; a record without one cannot be scored (e.g. harmful samples mixed in)."""
    if record.label is None:
        raise ValueError(f"record has no gold label to score against: {record.prompt[:80]!r}")
    return record.label


# ---------------------------------------------------------------- registry
def _key(name: str) -> str:
    """'AG_News', 'ag-news' and 'agnews' name the same task."""
    return name.strip().lower().replace("_", "").replace("-", "")


# Tasks by name (``--task``); a task module registers its class with ``@TASKS.register()``.
TASKS: Registry[type[Task]] = Registry("task", "task", normalize=_key)


def get_task(name: str) -> Task:
    """A task instance by name; an unknown name lists the registered ones."""
    return TASKS.lookup(name)()
