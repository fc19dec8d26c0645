"""`vaccine run CONFIG.yaml`: each grid cell through align -> finetune -> (posthoc) -> evaluate -> the store.

Plans (and so validates) every cell before any compute; then runs what is missing, in an order that lets
one alignment serve all the fine-tunes that need it. A cell whose evaluation is in the store is skipped, so
a second run of the same grid computes nothing new and a killed run picks up where it stopped.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vaccine.align import run_alignment
from vaccine.evaluate import rejudge, run_evaluate
from vaccine.experiments.grid import GridConfig
from vaccine.experiments.stages import CellPlan, build_row, earlier_answers, is_done, plan_cell
from vaccine.experiments.store import ResultStore
from vaccine.finetune import run_finetune
from vaccine.info import collect_info
from vaccine.posthoc import run_posthoc

log = logging.getLogger(__name__)


def store_path(grid: GridConfig) -> Path:
    return grid.out / "results.sqlite"


def stage_times_path(out: Path) -> Path:
    """One JSON line per stage this grid computed: where the wall time of a run went (benchmarks read it)."""
    return out / "stage_times.jsonl"


@contextmanager
def _stage(bar: tqdm, out: Path, cell_label: str, stage: str) -> Iterator[None]:
    """Show the stage in the progress bar, and log its wall time once it has finished."""
    bar.set_postfix_str(f"{cell_label}: {stage}")
    log.info("%s: %s", cell_label, stage)
    started = time.perf_counter()
    yield
    row = {"cell": cell_label, "stage": stage, "seconds": round(time.perf_counter() - started, 2)}
    with open(stage_times_path(out), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def run_cell(plan: CellPlan, bar: tqdm, out: Path, versions: dict[str, Any]) -> dict[str, Any]:
    """Run whatever stages of one cell are not done yet; return its store row."""
    label = f"{plan.cell.method.label} p={plan.cell.p:g} seed={plan.cell.seed}"
    if plan.align is not None and not is_done(plan.align.out):
        with _stage(bar, out, label, "align"):
            run_alignment(plan.align)
    if not is_done(plan.finetune.out):
        with _stage(bar, out, label, "finetune"):
            run_finetune(plan.finetune)
    if plan.posthoc is not None and not is_done(plan.posthoc.out):
        with _stage(bar, out, label, "posthoc"):
            run_posthoc(plan.posthoc)
    earlier = earlier_answers(plan)
    if plan.evaluate.out.is_file():
        result = json.loads(plan.evaluate.out.read_text(encoding="utf-8"))
    elif earlier is not None:
        with _stage(bar, out, label, "rejudge"):
            result = rejudge(json.loads(earlier.read_text(encoding="utf-8")), plan.evaluate)
    else:
        with _stage(bar, out, label, "evaluate"):
            result = run_evaluate(plan.evaluate)
    gc.collect()
    return build_row(plan, result, versions)


def run_tsne(plans: list[CellPlan], grid: GridConfig) -> list[Path]:
    """One picture per method: alignment-data embeddings of the aligned model and after each p."""
    from vaccine.data.records import sample_of
    from vaccine.data.resolve import load_records
    from vaccine.eval.tsne import tsne_figure, view_embeddings

    by_picture: dict[Path, list[CellPlan]] = {}
    for plan in plans:
        by_picture.setdefault(plan.tsne_png, []).append(plan)
    written = []
    for png, group in by_picture.items():
        if png.is_file():
            continue
        first = group[0]
        alignment = load_records(grid.align["data"])
        records = sample_of(alignment, grid.tsne["num_samples"], first.cell.seed, "num_samples", "alignment")
        views = {"before fine-tuning": [first.align.out] if first.align else []}
        views.update({f"p={plan.cell.p:g}": plan.evaluate.adapters for plan in group})
        embeddings = view_embeddings(first.cell.model, views, records, grid.dtype)
        title = f"{first.cell.method.label}: alignment data, {first.cell.task} n={first.cell.n}"
        written.append(tsne_figure(embeddings, png, title, first.cell.seed))
    return written


def run_grid(grid: GridConfig) -> dict[str, Any]:
    """Run the grid; returns counts and the store path."""
    plans = [plan_cell(grid, cell) for cell in grid.cells()]  # validates everything up front
    grid.out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(store_path(grid))
    versions = collect_info()["packages"]
    todo = [plan for plan in plans if not store.has(plan.eval_key)]
    started = time.perf_counter()
    with tqdm(total=len(plans), initial=len(plans) - len(todo), desc=f"grid {grid.name}", unit="cell") as bar:
        for plan in todo:
            store.add(run_cell(plan, bar, grid.out, versions))
            bar.update(1)
        pictures = []
        if grid.tsne["enabled"]:
            with _stage(bar, grid.out, "all methods", "tsne"):
                pictures = run_tsne(plans, grid)
    return {
        "cells": len(plans),
        "computed": len(todo),
        "store": str(store_path(grid)),
        "tsne": [str(p) for p in pictures],
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
