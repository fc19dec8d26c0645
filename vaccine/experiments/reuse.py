"""Stages another grid already computed, taken instead of computed again (the grid's ``reuse:`` folders).

A stage's folder is named by the hash of its inputs and never by the grid it belongs to, so two grids that
share settings plan the same folder names: a grid that adds methods to an earlier one (every method at one
p beside the powered run) would otherwise align, attack and evaluate the shared cells a second time. Before
it runs, a grid links each stage it still lacks to the same relative path under a ``reuse:`` folder where
that stage is done. Links are relative (the runs folder can move as a whole) and read-only in intent: a
stage found done is never written again. Evaluations bring their row file, copied, so the grid's index
lists them as its own cells with the package versions they were computed with.

A row is all the report and the resume need of a cell (its metrics, per-prompt verdicts, curves and
costs), so a run's results travel without its weights: a folder holding only ``eval/*.row.json``, copied
from a grid's ``out`` and committed, is a ``reuse:`` folder too. The next machine or session takes those
cells as done and computes only the rest: a stage a missing cell needs again (SFT's attack, for a repair
of it) is trained again from the same seed, so keep such cells in one session where the training is not
bit-reproducible. Without the answers a carried cell cannot be judged again: after a judge changes, its
key changes and the cell is computed anew.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from vaccine.experiments.graph import training_stages
from vaccine.experiments.grid import GridConfig
from vaccine.experiments.stages import CellPlan, is_done, row_path
from vaccine.io import write_text_atomic

log = logging.getLogger(__name__)


def link_reused_stages(grid: GridConfig, plans: list[CellPlan]) -> int:
    """Link every stage of ``plans`` that is missing under ``grid.out`` and done under one of
    ``grid.reuse`` (the first that has it). Returns how many stages were linked."""
    linked = 0
    for plan in plans:
        for _, spec in training_stages(plan):
            folder = spec.out
            source = _missing_here_done_there(grid, folder, is_done)
            if source is not None:
                _link(folder, source)
                linked += 1
        eval_json = plan.evaluate.out
        _drop_broken_link(eval_json)
        if row_path(eval_json).is_file():
            continue  # evaluated here, or its row carried here earlier: never replaced
        source = _missing_here_done_there(grid, eval_json, lambda path: row_path(path).is_file())
        if source is not None:
            if source.is_file():  # a folder of carried rows has no answers to link
                _link(eval_json, source)
            write_text_atomic(row_path(eval_json), row_path(source).read_text(encoding="utf-8"))
            linked += 1
    if linked:
        log.info("%s: %d stages taken from %s", grid.name, linked, ", ".join(map(str, grid.reuse)))
    return linked


def _missing_here_done_there(grid: GridConfig, path: Path, done: Callable[[Path], bool]) -> Path | None:
    """The same stage under the first ``reuse`` folder where it is ``done``; None when ``path`` exists
    here (computed, in progress or linked before) or nowhere is it done. A link whose target was deleted
    is removed first."""
    _drop_broken_link(path)
    if path.exists():
        return None
    relative = path.relative_to(grid.out)
    return next((root / relative for root in grid.reuse if done(root / relative)), None)


def _link(path: Path, source: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(source, path.parent))


def _drop_broken_link(path: Path) -> None:
    """Remove ``path`` if it is a link into a folder since deleted: it is linked again, or computed here."""
    if path.is_symlink() and not path.exists():
        path.unlink()
