"""A crash-safe store of evaluation rows: one SQLite file per experiment grid.

Why SQLite: a grid runs for days and may be killed at any moment. Each ``add`` is one transaction in WAL
mode, so a crash leaves either the previous state or the new row, never half a row, and several worker
processes may write to the same file. The full row lives as JSON; a few columns are copied out only so that
``rows(**filters)`` can select without parsing every row.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator
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
        validate_row(row)
        try:
            blob = json.dumps(row, sort_keys=True, default=str)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"evaluation row {row['key']!r} is not JSON-serialisable: {exc}") from exc
        values = (*(row[c] for c in COLUMNS), blob, row.get("created"))
        sql = "INSERT OR REPLACE INTO evaluations (key, label, model, task, p, n, seed, row_json, created) "
        with self._errors(f"write row {row['key']!r} to"):
            # IMMEDIATE takes the write lock up front, so concurrent workers wait instead of failing later.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(sql + "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
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
