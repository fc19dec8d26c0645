"""Property-based tests (hypothesis) for the loaders, the harmful mix and grid parsing."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaccine.data.files import load_file
from vaccine.data.mixing import harmful_count
from vaccine.errors import ConfigError, DataError
from vaccine.experiments.grid import TOP_KEYS, parse_grid
from vaccine.experiments.stages import plan_cell

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # anything UTF-8 can hold
PROMPT = TEXT.filter(lambda s: s.strip())
PAIRS = st.lists(st.tuples(PROMPT, TEXT), min_size=1, max_size=8)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(PAIRS)
def test_jsonl_round_trips_any_text(pairs):
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs), "utf-8")
        records = load_file(path)
    assert [(r.prompt, r.response) for r in records] == pairs


CSV_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40)


@FAST
@given(
    st.lists(st.tuples(CSV_TEXT.filter(lambda s: s.strip() and not s.startswith("#")), CSV_TEXT), min_size=1)
)
def test_csv_round_trips_quotes_commas_and_unicode(pairs):
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", "response"])
            writer.writerows(pairs)
        records = load_file(path)
    assert [(r.prompt, r.response) for r in records] == pairs


@FAST
@given(st.binary(max_size=200), st.sampled_from([".jsonl", ".json", ".csv"]))
def test_any_bytes_load_or_fail_with_a_data_error_naming_the_file(content, suffix):
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            records = load_file(path)
        except DataError as err:
            assert "upload" in str(err)
        else:
            assert records and all(r.prompt.strip() for r in records)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.integers(1, 100_000))
def test_harmful_count_is_floor_p_n_and_never_exceeds_n(p, n):
    k = harmful_count(p, n)
    assert 0 <= k <= n
    assert k == math.floor(p * n) or abs(p * n - round(p * n)) < 1e-6


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 5000))
def test_harmful_count_grows_with_p(p, q, n):
    low, high = sorted((p, q))
    assert harmful_count(low, n) <= harmful_count(high, n)


def base_grid(tmp: str) -> dict:
    return {
        "out": f"{tmp}/runs",
        "models": ["m"],
        "tasks": ["sst2"],
        "p": [0.1],
        "n": [10],
        "methods": [{"label": "SFT", "align": {"method": "sft"}}, {"label": "Non-aligned", "align": None}],
    }


@FAST
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=4, unique=True),
    st.lists(st.integers(1, 500), min_size=1, max_size=3, unique=True),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=3, unique=True),
)
def test_grid_has_one_cell_per_combination(ps, ns, seeds):
    with TemporaryDirectory() as tmp:
        grid = parse_grid({**base_grid(tmp), "p": ps, "n": ns, "seeds": seeds})
    assert len(grid.cells()) == 2 * len(ps) * len(ns) * len(seeds)


@FAST
@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001)).filter(math.isfinite))
def test_p_outside_the_unit_interval_fails_when_the_grid_is_planned(p):
    with TemporaryDirectory() as tmp:
        grid = parse_grid({**base_grid(tmp), "p": [p]})
        with pytest.raises(ConfigError, match="p"):
            for cell in grid.cells():
                plan_cell(grid, cell)


@FAST
@given(
    st.text(st.characters(categories=("Ll", "Nd")), min_size=1, max_size=12).filter(
        lambda k: k not in TOP_KEYS
    )
)
def test_an_unknown_top_level_key_is_named(key):
    with TemporaryDirectory() as tmp:
        with pytest.raises(ConfigError, match=f"{key}: unknown key"):
            parse_grid({**base_grid(tmp), key: 1})
