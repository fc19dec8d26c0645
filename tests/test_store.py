"""ResultStore: round trip, upsert, filters, validation, and crash/disk-full safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import vaccine
from vaccine.errors import ConfigError, VaccineError
from vaccine.experiments.store import ResultStore


def make_row(key: str, label: str = "SFT", p: float = 0.1, seed: int = 0, hs: float = 50.0) -> dict:
    return {
        "key": key,
        "label": label,
        "model": "tiny",
        "task": "sst2",
        "p": p,
        "n": 100,
        "seed": seed,
        "align_method": "sft",
        "finetune_defense": "none",
        "lora_mode": "double",
        "metrics": {"harmful_score": hs, "finetune_accuracy": 90.0, "embedding_drift": None},
        "curves": {"drift": [{"step": 0, "drift": 0.0, "alignment_loss": 1.0}]},
        "cost": {"align_step_time_s": 0.5, "align_peak_memory_mb": None},
        "artifacts": {},
        "config": {"nested": {"list": [1, 2, 3]}},
        "versions": {"torch": "x"},
        "created": "2025-01-01T00:00:00+00:00",
    }


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "results.db"
    with ResultStore(path) as store:
        row = make_row("a")
        store.add(row)
        assert store.get("a") == row
        assert store.has("a") and not store.has("b")
        assert store.get("b") is None
        assert len(store) == 1
    assert ResultStore(path).get("a") == row  # persisted across connections


def test_upsert_replaces(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    store.add(make_row("a", hs=10.0))
    store.add(make_row("a", hs=20.0, label="Vaccine (rho=2)"))
    assert len(store) == 1
    assert store.get("a")["metrics"]["harmful_score"] == 20.0
    assert store.rows(label="Vaccine (rho=2)")[0]["key"] == "a"
    assert store.rows(label="SFT") == []


def test_filters(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    for i, (label, p, seed) in enumerate(
        [("SFT", 0.0, 0), ("SFT", 0.1, 1), ("EWC", 0.1, 0), ("EWC", 0.2, 1)]
    ):
        store.add(make_row(f"k{i}", label=label, p=p, seed=seed))
    assert {r["key"] for r in store.rows(label="SFT")} == {"k0", "k1"}
    assert {r["key"] for r in store.rows(p=0.1)} == {"k1", "k2"}
    assert {r["key"] for r in store.rows(label="EWC", seed=1)} == {"k3"}
    assert {r["key"] for r in store.rows(p=[0.0, 0.2])} == {"k0", "k3"}
    assert store.rows(model="other") == []
    assert len(store.rows()) == 4
    with pytest.raises(ConfigError, match="metrics"):
        store.rows(metrics=1)


@pytest.mark.parametrize("field", ["key", "label", "p", "seed", "metrics"])
def test_missing_field_is_named(tmp_path, field):
    store = ResultStore(tmp_path / "r.db")
    row = make_row("a")
    del row[field]
    with pytest.raises(ConfigError, match=f"'{field}'"):
        store.add(row)
    assert len(store) == 0


def test_invalid_values_rejected(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    with pytest.raises(ConfigError, match="'p'"):
        store.add(make_row("a", p=1.5))
    with pytest.raises(ConfigError, match="harmful_score"):
        store.add({**make_row("a"), "metrics": {"finetune_accuracy": 1.0}})
    with pytest.raises(ConfigError, match="'n'"):
        store.add({**make_row("a"), "n": "100"})


# The child skips vaccine/__init__ (torch, transformers: seconds of import) by registering a bare package.
CRASH = """
import os, sqlite3, sys, types
pkg = types.ModuleType("vaccine")
pkg.__path__ = [{package!r}]
sys.modules["vaccine"] = pkg
from vaccine.experiments.store import ResultStore
sys.path.insert(0, {tests!r})
from test_store import make_row

store = ResultStore({path!r})
store.add(make_row("a"))
store.add(make_row("b", label="EWC"))
{crash}
"""

# Crash inside the store's own add(): the trace hook fires when COMMIT is about to run, after the INSERT.
CRASH_IN_ADD = """
store._conn.set_trace_callback(lambda sql: os._exit(1) if sql.startswith("COMMIT") else None)
store.add(make_row("c", hs=99.0))
"""
# Crash in a large raw transaction: enough data that SQLite spills pages into the WAL before the crash.
CRASH_RAW = """
conn = sqlite3.connect({path!r}, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
for i in range(300):
    values = (f"z{{i}}", "x" * 5000)
    conn.execute("INSERT INTO evaluations VALUES (?, 'X', 'tiny', 'sst2', 0.1, 1, 0, ?, NULL)", values)
conn.execute("UPDATE evaluations SET row_json = 'garbage' WHERE key = 'a'")
os._exit(1)
"""


@pytest.mark.parametrize("crash", [CRASH_IN_ADD, CRASH_RAW], ids=["in_add", "raw_txn"])
def test_store_survives_a_crash_mid_write(tmp_path, crash):
    path = str(tmp_path / "r.db")
    tests, package = str(Path(__file__).parent), str(Path(vaccine.__file__).parent)
    script = CRASH.format(tests=tests, package=package, path=path, crash=crash.format(path=path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    store = ResultStore(path)
    assert sorted(r["key"] for r in store.rows()) == ["a", "b"]  # earlier rows intact, no partial row
    assert store.get("a") == make_row("a")
    assert not store.has("c")
    check = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchall()
    assert check == [("ok",)]
    store.add(make_row("c"))  # still writable after recovery
    assert len(store) == 3


def test_disk_full_is_a_clear_error_and_keeps_earlier_rows(tmp_path):
    path = tmp_path / "r.db"
    store = ResultStore(path)
    store.add(make_row("a"))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # the database file cannot grow: "disk full"
    big = make_row("big")
    big["config"]["blob"] = "x" * 200_000
    with pytest.raises(VaccineError, match=str(path)) as info:
        store.add(big)
    assert "full" in str(info.value)
    assert [r["key"] for r in store.rows()] == ["a"]
    assert ResultStore(path).get("a") == make_row("a")


def test_unopenable_path_names_it(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(VaccineError, match="dir.db"):
        ResultStore(tmp_path / "dir.db")


def test_replace_all_makes_the_store_exactly_the_rows_in_one_transaction(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    store.add(make_row("stale"))
    assert store.index_version == 0  # written row by row
    store.replace_all([make_row("a"), make_row("b", label="EWC")], version=1)
    assert sorted(r["key"] for r in store.rows()) == ["a", "b"] and store.index_version == 1
    with pytest.raises(ConfigError, match="'p'"):  # one bad row: the previous index stays whole
        store.replace_all([make_row("c"), make_row("d", p=2.0)])
    assert sorted(r["key"] for r in ResultStore(tmp_path / "r.db").rows()) == ["a", "b"]


def write_row_file(folder: Path, row: dict) -> Path:
    from vaccine.io import write_json_atomic

    return write_json_atomic(folder / f"{row['key']}.row.json", row)


def test_the_store_is_an_index_rebuilt_from_the_row_files(tmp_path):
    from vaccine.experiments.index import rebuild_index

    folder = tmp_path / "eval"
    for row in (make_row("a"), make_row("b", label="EWC", hs=10.0)):
        write_row_file(folder, row)
    store = rebuild_index(tmp_path / "results.sqlite", folder)
    assert store.get("b") == make_row("b", label="EWC", hs=10.0) and len(store) == 2
    (folder / "a.row.json").unlink()  # a file gone: its row leaves the index
    write_row_file(folder, make_row("c", seed=3))  # a file written by a worker: its row joins it
    store = rebuild_index(tmp_path / "results.sqlite", folder)
    assert sorted(r["key"] for r in store.rows()) == ["b", "c"]


def test_a_store_from_before_row_files_keeps_its_rows_when_it_becomes_an_index(tmp_path):
    from vaccine.experiments.index import rebuild_index

    old = ResultStore(tmp_path / "results.sqlite")
    kept = {**make_row("old"), "artifacts": {"eval_json": "/elsewhere/eval/sft-p0.1-old-j1.json"}}
    old.add(kept)
    old.add(make_row("bare"))
    old.close()
    store = rebuild_index(tmp_path / "results.sqlite", tmp_path / "eval")
    assert sorted(r["key"] for r in store.rows()) == ["bare", "old"]
    assert (tmp_path / "eval" / "sft-p0.1-old-j1.row.json").is_file()  # beside where its evaluation is
    assert (tmp_path / "eval" / "bare.row.json").is_file()


def test_an_unreadable_row_file_is_named_and_the_index_is_kept(tmp_path):
    from vaccine.errors import DataError
    from vaccine.experiments.index import rebuild_index

    folder = tmp_path / "eval"
    write_row_file(folder, make_row("a"))
    rebuild_index(tmp_path / "results.sqlite", folder)
    (folder / "b.row.json").write_text("{cut short")
    with pytest.raises(DataError, match="b.row.json"):
        rebuild_index(tmp_path / "results.sqlite", folder)
    assert [r["key"] for r in ResultStore(tmp_path / "results.sqlite").rows()] == ["a"]
