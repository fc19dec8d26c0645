"""`vaccine run CONFIG.yaml`: each grid cell through align -> finetune -> (posthoc) -> evaluate -> the store.

Plans (and so validates) every cell before any compute; then an executor runs what is missing: the local
one here, cell by cell in this process, in an order that lets one alignment serve all the fine-tunes that
need it; the Ray one (``ray_executor``) as one task per stage on a cluster. Either way this process is the
driver: it rebuilds the store from the row files first (``index``), skips every cell that has a row, and
is the only one to write the store. A second run of the same grid computes nothing new, and a killed run
picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from vaccine.experiments.execute import StageDone, draw_tsne, evaluate_cell, package_versions, train_stage
from vaccine.experiments.graph import cell_label, training_stages, tsne_jobs
from vaccine.experiments.grid import GridConfig
from vaccine.experiments.index import index_grid, store_path
from vaccine.experiments.reuse import link_reused_stages
from vaccine.experiments.stages import CellPlan, plan_cell
from vaccine.experiments.store import ResultStore

log = logging.getLogger(__name__)

__all__ = ["Driver", "Executor", "LocalExecutor", "run_cell", "run_grid", "run_tsne", "store_path"]


def stage_times_path(out: Path) -> Path:
    """One JSON line per stage this grid computed: where the wall time of a run went (benchmarks read it)."""
    return out / "stage_times.jsonl"


def record_time(out: Path, cell_label: str, stage: str, seconds: float | None) -> None:
    """Log a stage's wall time; None: the stage was done already and nothing ran."""
    if seconds is None:
        return
    row = {"cell": cell_label, "stage": stage, "seconds": seconds}
    with open(stage_times_path(out), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


@contextmanager
def _stage(bar: tqdm, out: Path, cell_label: str, stage: str) -> Iterator[None]:
    """Show the stage in the progress bar, and log its wall time once it has finished."""
    bar.set_postfix_str(f"{cell_label}: {stage}")
    log.info("%s: %s", cell_label, stage)
    started = time.perf_counter()
    yield
    record_time(out, cell_label, stage, round(time.perf_counter() - started, 2))


def run_cell(plan: CellPlan, bar: tqdm, out: Path, versions: dict[str, Any]) -> dict[str, Any]:
    """Run whatever stages of one cell are not done yet, in this process; return its store row (also
    written as the cell's row file)."""
    label = cell_label(plan)
    for stage, spec in training_stages(plan):
        bar.set_postfix_str(f"{label}: {stage}")
        record_time(out, label, stage, train_stage(stage, spec, label))
    bar.set_postfix_str(f"{label}: evaluate")
    done = evaluate_cell(plan, versions, label)
    record_time(out, label, done.stage, done.seconds)
    return done.row


def run_tsne(plans: list[CellPlan], grid: GridConfig) -> list[Path]:
    """One picture per method: alignment-data embeddings of the aligned model and after each p."""
    return [draw_tsne(job) for job in tsne_jobs(plans, grid)]


@dataclass
class Driver:
    """The one process that records a grid's progress: stage times, the progress bar and the store."""

    grid: GridConfig
    store: ResultStore
    bar: tqdm
    versions: dict[str, Any] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.store.add(row)
        self.bar.update(1)

    def finished(self, label: str, done: StageDone) -> None:
        """A stage ended somewhere: log its time; an evaluation's row joins the store."""
        record_time(self.grid.out, label, done.stage, done.seconds)
        self.bar.set_postfix_str(f"{label}: {done.stage} done")
        if done.row is not None:
            self.add(done.row)


class Executor(Protocol):
    """Where a grid's stages run. ``run`` runs every stage of ``plans`` not done yet and the t-SNE
    pictures not drawn yet, hands each evaluation's row to ``driver``, and returns the pictures drawn."""

    def run(self, grid: GridConfig, plans: list[CellPlan], driver: Driver) -> list[Path]: ...


class LocalExecutor:
    """Every stage in this process, cell after cell (the default)."""

    def run(self, grid: GridConfig, plans: list[CellPlan], driver: Driver) -> list[Path]:
        for plan in plans:
            if not driver.store.has(plan.eval_key):
                driver.add(run_cell(plan, driver.bar, grid.out, driver.versions))
        if not grid.tsne["enabled"]:
            return []
        with _stage(driver.bar, grid.out, "all methods", "tsne"):
            return run_tsne(plans, grid)


def run_grid(grid: GridConfig, executor: Executor | None = None) -> dict[str, Any]:
    """Run the grid (by default in this process); returns counts and the store path."""
    plans = [plan_cell(grid, cell) for cell in grid.cells()]  # validates everything up front
    grid.out.mkdir(parents=True, exist_ok=True)
    link_reused_stages(grid, plans)
    versions = package_versions()
    store = index_grid(grid, plans, versions)
    todo = [plan for plan in plans if not store.has(plan.eval_key)]
    started = time.perf_counter()
    with tqdm(total=len(plans), initial=len(plans) - len(todo), desc=f"grid {grid.name}", unit="cell") as bar:
        driver = Driver(grid, store, bar, versions)
        pictures = (executor or LocalExecutor()).run(grid, plans, driver)
    return {
        "cells": len(plans),
        "computed": len(todo),
        "store": str(store_path(grid)),
        "tsne": [str(p) for p in pictures],
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
