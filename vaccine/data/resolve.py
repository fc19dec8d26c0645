"""Data specs: a built-in split name, a local file, or a hub id, with an optional '?label=' filter; or a
``vlguard:`` spec of image+text records.

The top of the data layer: it sees the built-in splits (``vaccine.data.splits``), the file and hub loaders
(``vaccine.data.files``) and the image+text loader (``vaccine.data.vlguard``); nothing in the data layer
imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaccine.data.files import FILE_TYPES, load_file, load_hub
from vaccine.data.records import Record
from vaccine.data.splits import SPLITS
from vaccine.data.vlguard import is_vlguard_spec, load_vlguard
from vaccine.errors import DataError


def load_records(spec: str, **kw: Any) -> list[Record]:
    """Resolve a data spec: a built-in split name, a local file or folder, or a hub id ('hf:ID' or
    'owner/name'). A hub id may name its split after '@' (``hf:PKU-Alignment/BeaverTails@30k_train``) and any
    spec may keep one label with a '?label=' suffix (``...?label=safe``: BeaverTails' safe answers).
    ``vlguard:...`` specs are image+text records (:mod:`vaccine.data.vlguard`, with options of their own)."""
    if is_vlguard_spec(spec):
        return load_vlguard(spec)
    spec, _, query = spec.partition("?")
    records = _load_unfiltered(spec, **kw)
    if not query:
        return records
    key, _, wanted = query.partition("=")
    if key != "label" or not wanted:
        raise DataError(f"{spec}?{query}: the only filter is '?label=VALUE'")
    kept = [r for r in records if r.label == wanted]
    if not kept:
        raise DataError(f"{spec}: no record has label {wanted!r}")
    return kept


def _load_unfiltered(spec: str, **kw: Any) -> list[Record]:
    if spec in SPLITS:
        return list(SPLITS[spec].loader())
    path = Path(spec).expanduser()
    if path.is_file():
        return load_file(path, **kw)
    hub_id, at, split = spec.partition("@")
    if at:
        kw = {**kw, "split": split}
    if Path(hub_id).expanduser().is_dir() or spec.startswith("hf:"):
        return load_hub(hub_id, **kw)
    if path.suffix.lower() in FILE_TYPES or spec.startswith((".", "/", "~")):
        raise DataError(f"{spec}: file not found")
    if "/" in spec:
        return load_hub(hub_id, **kw)
    raise DataError(
        f"unknown data '{spec}': not a file, not a hub id (owner/name or hf:ID), "
        f"and not a built-in split ({', '.join(SPLITS)})"
    )
