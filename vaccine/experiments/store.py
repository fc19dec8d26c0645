"""A crash-safe store of evaluation rows: one SQLite file per experiment grid, the index of its row files.

Why SQLite: the report selects and groups rows, and a grid runs for days and may be killed at any moment.
Each ``add`` is one transaction in WAL mode, so a crash leaves either the previous state or the new row,
never half a row. The full row lives as JSON; a few columns are copied out only so that ``rows(**filters)``
can select without parsing every row. The record of truth is the row files beside the evaluations
(``vaccine/experiments/index.py``): the store is rebuilt from them (``replace_all``), and only the driver
of a grid writes it, since SQLite's locks do not hold over a network share that many machines write.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vaccine.errors import ConfigError, VaccineError

# Column name -> the Python type a row's value must have (bool is rejected separately: it is an int).
COLUMNS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "label": (str,),
    "model": (str,),
    "task": (str,),
    "p": (int, float),
    "n": (int,),
    "seed": (int,),
}
REQUIRED = (*COLUMNS, "metrics")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, model TEXT NOT NULL, task TEXT NOT NULL,
    p REAL NOT NULL, n INTEGER NOT NULL, seed INTEGER NOT NULL, row_json TEXT NOT NULL, created TEXT
);
CREATE INDEX IF NOT EXISTS evaluations_group ON evaluations (model, task, n, label, p, seed);
"""
_ORDER = "ORDER BY model, task, n, label, p, seed, key"


def validate_row(row: Any) -> dict[str, Any]:
    """Reject a row the report could not place in a table, naming the field, before it reaches the disk."""
    if not isinstance(row, dict):
        raise ConfigError(f"an evaluation row must be a dict, got {type(row).__name__}")
    for field in REQUIRED:
        if field not in row or row[field] is None:
            raise ConfigError(f"evaluation row is missing required field '{field}'")
    for field, kinds in COLUMNS.items():
        value = row[field]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ConfigError(f"evaluation row field '{field}' must be {kinds[0].__name__}, got {value!r}")
    if not row["key"]:
        raise ConfigError("evaluation row field 'key' must not be empty")
    if not math.isfinite(row["p"]) or not 0.0 <= row["p"] <= 1.0:
        raise ConfigError(f"evaluation row field 'p' must be in [0, 1], got {row['p']!r}")
    metrics = row["metrics"]
    if not isinstance(metrics, dict) or metrics.get("harmful_score") is None:
        raise ConfigError("evaluation row is missing required field 'metrics.harmful_score'")
    return row


_INSERT = (
    "INSERT OR REPLACE INTO evaluations (key, label, model, task, p, n, seed, row_json, created) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _values(row: dict[str, Any]) -> tuple[Any, ...]:
    """A validated row as the values of one ``_INSERT``."""
    validate_row(row)
    try:
        blob = json.dumps(row, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"evaluation row {row['key']!r} is not JSON-serialisable: {exc}") from exc
    return (*(row[c] for c in COLUMNS), blob, row.get("created"))


class ResultStore:
    """Evaluation rows keyed by the hash of their inputs; ``add`` is an atomic upsert."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with self._errors("open"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly, so none is ever left half-open.
            self._conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)

    def add(self, row: dict[str, Any]) -> None:
        """Insert or replace one row in a single transaction: a crash keeps the previous state."""
        values = _values(row)
        with self._errors(f"write row {row['key']!r} to"), self._transaction():
            self._conn.execute(_INSERT, values)

    def replace_all(self, rows: list[dict[str, Any]], version: int | None = None) -> None:
        """Make the store hold exactly ``rows`` (an index rebuilt from its files), in one transaction: a
        crash keeps the previous index whole. ``version`` marks what the store indexes (``index_version``)."""
        values = [_values(row) for row in rows]  # every row checked before the old index is touched
        with self._errors("rebuild"), self._transaction():
            self._conn.execute("DELETE FROM evaluations")
            self._conn.executemany(_INSERT, values)
            if version is not None:
                self._conn.execute(f"PRAGMA user_version = {int(version)}")

    @property
    def index_version(self) -> int:
        """0 for a store written row by row (before rows were files); set by ``replace_all``."""
        with self._errors("read"):
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a second writer waits instead of failing later.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def get(self, key: str) -> dict[str, Any] | None:
        """The row stored under ``key``, or None: callers use it to skip cells already evaluated."""
        with self._errors("read"):
            hit = self._conn.execute("SELECT row_json FROM evaluations WHERE key = ?", (key,)).fetchone()
        return json.loads(hit[0]) if hit else None

    def has(self, key: str) -> bool:
        with self._errors("read"):
            return (
                self._conn.execute("SELECT 1 FROM evaluations WHERE key = ?", (key,)).fetchone() is not None
            )

    def rows(self, **filters: Any) -> list[dict[str, Any]]:
        """Rows whose indexed columns equal the filters (a list/tuple/set value means 'any of')."""
        clauses, params = [], []
        for column, value in filters.items():
            if column not in COLUMNS:
                raise ConfigError(f"cannot filter on '{column}': choose from {', '.join(COLUMNS)}")
            values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "0")
            params.extend(values)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        with self._errors("read"):
            found = self._conn.execute(f"SELECT row_json FROM evaluations {where}{_ORDER}", params).fetchall()
        return [json.loads(blob) for (blob,) in found]

    def __len__(self) -> int:
        with self._errors("read"):
            return self._conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def _errors(self, action: str) -> _StoreErrors:
        return _StoreErrors(f"cannot {action} result store {self.path}")


class _StoreErrors:
    """Turn sqlite/OS errors (disk full, read-only, locked, corrupt) into one VaccineError naming the file."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, sqlite3.Error | OSError):
            raise VaccineError(f"{self.message}: {exc}") from exc
        return False
