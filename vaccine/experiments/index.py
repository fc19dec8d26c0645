"""Results as files: each evaluation's JSON is the record of truth, and ``results.sqlite`` an index of them.

Each cell's store row is written, atomically, as ``eval/<name>.row.json`` beside its evaluation JSON by
whichever process evaluated it, on whichever machine. The driver of the grid (and ``vaccine report``)
rebuilds the SQLite index from those files. Why: workers on many machines would otherwise write one
database file over a network share, where SQLite's locks do not hold; files written once each, by rename,
need no lock. A row missing beside an evaluation JSON (a kill between the two writes) is built again from
the JSON and the stage folders, so nothing that was evaluated is ever lost from the index.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vaccine.errors import DataError
from vaccine.experiments.execute import package_versions
from vaccine.experiments.grid import GridConfig
from vaccine.experiments.stages import ROW_SUFFIX, CellPlan, build_row, row_path
from vaccine.experiments.store import ResultStore
from vaccine.io import write_json_atomic

log = logging.getLogger(__name__)

# PRAGMA user_version of a store that is an index of row files; 0: written row by row, before rows were files.
FILE_INDEX = 1


def store_path(grid: GridConfig) -> Path:
    return grid.out / "results.sqlite"


def rows_dir(grid: GridConfig) -> Path:
    return grid.out / "eval"


def read_row(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"{path}: unreadable result row ({err}); delete it to evaluate the cell again"
        ) from err


def export_rows(store: ResultStore, folder: Path) -> int:
    """Write each row of a store kept before rows were files as a row file (once, when it first becomes
    an index), so rebuilding the index from files loses none of its rows. Returns how many were written."""
    written = 0
    for row in store.rows():
        eval_json = row.get("artifacts", {}).get("eval_json")
        path = row_path(folder / Path(eval_json).name) if eval_json else folder / f"{row['key']}{ROW_SUFFIX}"
        if not path.is_file():
            write_json_atomic(path, row)
            written += 1
    return written


def rebuild_index(path: Path, folder: Path) -> ResultStore:
    """The store at ``path``, rebuilt in one transaction to hold exactly the row files in ``folder``."""
    store = ResultStore(path)
    if store.index_version < FILE_INDEX and len(store):
        log.info("%s: %d rows written as files before the first rebuild", path, export_rows(store, folder))
    rows = [read_row(file) for file in sorted(folder.glob(f"*{ROW_SUFFIX}"))]
    store.replace_all(rows, version=FILE_INDEX)
    return store


def index_grid(
    grid: GridConfig, plans: list[CellPlan], versions: dict[str, Any] | None = None
) -> ResultStore:
    """The grid's index, rebuilt from its files: first a row file for every evaluation JSON of ``plans``
    that has none (``versions``: recorded in such rows; default: this process's), then the store."""
    missing = [
        plan for plan in plans if plan.evaluate.out.is_file() and not row_path(plan.evaluate.out).is_file()
    ]
    if missing and versions is None:
        versions = package_versions()
    for plan in missing:
        result = json.loads(plan.evaluate.out.read_text(encoding="utf-8"))
        write_json_atomic(row_path(plan.evaluate.out), build_row(plan, result, versions or {}))
    return rebuild_index(store_path(grid), rows_dir(grid))
