"""The scripts import (a renamed module would otherwise break them silently: no other test runs them)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("name", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    module = importlib.import_module(name)
    assert module.__doc__, f"scripts/{name}.py has no docstring saying what it is for"
    sys.modules.pop(name, None)


def test_robustness_reuses_the_grid_alignments_and_reports_a_margin_per_learning_rate(
    raw_grid, tmp_path, monkeypatch
):
    import yaml

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import robustness

    raw = {**raw_grid, "seeds": [1, 2], "tsne": {"enabled": False}}
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(raw))
    store = robustness.ResultStore(tmp_path / "robust" / "results.sqlite")
    methods = ["SFT", "Vaccine"]
    results = {lr: robustness.attacked_rows(config, lr, 0.5, methods, store) for lr in (1e-3, 1e-2)}
    alignments = list((Path(raw["out"]) / "align").glob("*/summary.json"))
    assert len(alignments) == 4  # SFT and Vaccine x 2 seeds, shared by both learning rates
    assert len(store) == 8 and all(len(rows) == 4 for rows in results.values())
    table = robustness.margin_table(results, methods, 0.5)
    assert table.count("\n") == 4 and "Vaccine - SFT" in table and "| 0.01 |" in table
    assert robustness.margin_plot(results, methods, 0.5, tmp_path / "margin.png").stat().st_size > 0
    again = robustness.attacked_rows(config, 1e-3, 0.5, methods, store)  # computed once: read back
    assert [r["key"] for r in again] == [r["key"] for r in results[1e-3]]
    sys.modules.pop("robustness", None)
