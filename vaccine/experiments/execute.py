"""Run one stage of a grid, idempotently: skip it when done, resume it from its checkpoints when cut short.

Both executors run stages through here: the local one in its own process, the Ray one inside a task (in
the worker's process, or under ``accelerate launch`` for a training stage given more than one GPU). A stage
counts as done only by the file it writes last, atomically (``summary.json``, the evaluation JSON, the row
file), so running it twice, or again after its worker died half-way, is safe and ends with the same files.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaccine.experiments.graph import StageNode, TsneJob
from vaccine.experiments.stages import CellPlan, build_row, earlier_answers, is_done, row_path
from vaccine.io import write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageDone:
    """What running a stage did: ``stage`` as it ran (an evaluation may have been a ``rejudge``), its wall
    time (None: it was done already, nothing ran), and for an evaluation the cell's store row."""

    stage: str
    out: Path
    seconds: float | None
    row: dict[str, Any] | None = None


def _trainer(stage: str) -> Any:
    """The stage's function, imported when first needed (each pulls in torch and transformers)."""
    if stage == "align":
        from vaccine.align import run_alignment

        return run_alignment
    if stage == "finetune":
        from vaccine.finetune import run_finetune

        return run_finetune
    from vaccine.posthoc import run_posthoc

    return run_posthoc


def train_stage(stage: str, spec: Any, label: str, gpus: float = 0) -> float | None:
    """Train ``stage`` into ``spec.out`` unless it is done; its wall time, or None when it was done. With
    more than one GPU the stage runs under ``accelerate launch`` (one process per GPU, DDP), as a user
    would launch it by hand."""
    if is_done(spec.out):
        return None
    log.info("%s: %s", label, stage)
    started = time.perf_counter()
    if gpus > 1:
        from vaccine.experiments.launch import launch_stage

        launch_stage(stage, spec, int(gpus))
    else:
        _trainer(stage)(spec)
    gc.collect()
    return round(time.perf_counter() - started, 2)


def evaluate_cell(plan: CellPlan, versions: dict[str, Any], label: str) -> StageDone:
    """The cell's evaluation (computed, judged again from an earlier judge's answers, or read back) and its
    store row, which is written as a file beside the evaluation JSON (the record the index is built from)."""
    from vaccine.evaluate import rejudge, run_evaluate

    started, stage = time.perf_counter(), None
    if plan.evaluate.out.is_file():
        result = json.loads(plan.evaluate.out.read_text(encoding="utf-8"))
    elif (earlier := earlier_answers(plan)) is not None:
        log.info("%s: rejudge", label)
        stage, result = "rejudge", rejudge(json.loads(earlier.read_text(encoding="utf-8")), plan.evaluate)
    else:
        log.info("%s: evaluate", label)
        stage, result = "evaluate", run_evaluate(plan.evaluate)
    seconds = round(time.perf_counter() - started, 2) if stage else None
    gc.collect()
    row = build_row(plan, result, versions)
    write_json_atomic(row_path(plan.evaluate.out), row)
    return StageDone(stage or "evaluate", plan.evaluate.out, seconds, row)


def draw_tsne(job: TsneJob) -> Path:
    """One picture: the alignment data's embeddings under the aligned model and after each p."""
    from vaccine.data.records import sample_of
    from vaccine.data.resolve import load_records
    from vaccine.eval.tsne import tsne_figure, view_embeddings

    first, grid = job.plans[0], job.grid
    alignment = load_records(grid.align["data"])
    records = sample_of(alignment, grid.tsne["num_samples"], first.cell.seed, "num_samples", "alignment")
    views = {"before fine-tuning": [first.align.out] if first.align else []}
    views.update({f"p={plan.cell.p:g}": plan.evaluate.adapters for plan in job.plans})
    embeddings = view_embeddings(first.cell.model, views, records, grid.dtype)
    title = f"{first.cell.method.label}: alignment data, {first.cell.task} n={first.cell.n}"
    # drawn beside its place, then renamed: a picture cut short by a kill must not count as drawn
    partial = job.png.with_name(f".{job.png.stem}.partial{job.png.suffix}")
    os.replace(tsne_figure(embeddings, partial, title, first.cell.seed), job.png)
    return job.png


@functools.cache
def package_versions() -> dict[str, Any]:
    """The versions recorded in each row: those of the process that evaluated it."""
    from vaccine.info import collect_info

    return collect_info()["packages"]


def run_stage(node: StageNode, gpus: float = 0) -> StageDone:
    """Run one node of the stage graph where this process is (a Ray task calls this)."""
    if node.stage == "evaluate":
        return evaluate_cell(node.spec, package_versions(), node.label)
    if node.stage == "tsne":
        if node.out.is_file():
            return StageDone("tsne", node.out, None)
        started = time.perf_counter()
        draw_tsne(node.spec)
        return StageDone("tsne", node.out, round(time.perf_counter() - started, 2))
    return StageDone(node.stage, node.out, train_stage(node.stage, node.spec, node.label, gpus))
