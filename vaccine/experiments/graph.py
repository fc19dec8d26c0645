"""A grid as a graph of stages: each stage folder once, with the stages it needs.

Cells share work: one alignment feeds every fine-tune of its method (all p, all tasks), and several post-hoc
repairs repair one fine-tune. A scheduler that ran cells would run a shared stage once per cell, or race
two copies of it into one folder; so the unit of work is the stage, named by the path it writes (a stage's
folder holds the hash of its inputs, so equal paths are equal work). Only stages that are not done are in
the graph; a stage whose upstream is done simply has no upstream in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaccine.experiments.grid import GridConfig
from vaccine.experiments.stages import CellPlan, is_done, row_path

TRAINING = ("align", "finetune", "posthoc")


def cell_label(plan: CellPlan) -> str:
    """How logs and progress name a cell."""
    return f"{plan.cell.method.label} p={plan.cell.p:g} seed={plan.cell.seed}"


@dataclass(frozen=True)
class TsneJob:
    """One t-SNE picture: a method's alignment data under its aligned model and after each p."""

    png: Path
    plans: tuple[CellPlan, ...]
    grid: GridConfig


@dataclass(frozen=True)
class StageNode:
    """One stage to run: ``stage`` (align, finetune, posthoc, evaluate, tsne), what it writes (``out``: its
    identity), its input (a stage spec; the ``CellPlan`` for an evaluation, which also builds the row; a
    ``TsneJob`` for a picture) and the ``out`` of each stage it must wait for."""

    stage: str
    out: Path
    label: str
    spec: Any
    needs: tuple[Path, ...] = ()


def training_stages(plan: CellPlan) -> list[tuple[str, Any]]:
    """A cell's training stages in order, as (stage, spec); absent ones (Non-aligned, no repair) left out."""
    specs = [("align", plan.align), ("finetune", plan.finetune), ("posthoc", plan.posthoc)]
    return [(stage, spec) for stage, spec in specs if spec is not None]


def is_evaluated(plan: CellPlan) -> bool:
    """A cell is evaluated when its row file exists: written last, atomically, after its evaluation JSON."""
    return row_path(plan.evaluate.out).is_file()


def stage_graph(plans: list[CellPlan], grid: GridConfig) -> list[StageNode]:
    """The stages still to run for ``plans``, each once, upstream before downstream (the cells' order, so
    the first cells finish first), then the t-SNE pictures that are not drawn yet."""
    nodes: dict[Path, StageNode] = {}
    for plan in plans:
        if is_evaluated(plan):
            continue
        label, upstream = cell_label(plan), []
        for stage, spec in training_stages(plan):
            if not is_done(spec.out) and spec.out not in nodes:
                nodes[spec.out] = StageNode(stage, spec.out, label, spec, tuple(upstream))
            upstream.append(spec.out)
        out = plan.evaluate.out
        nodes[out] = StageNode("evaluate", out, label, plan, tuple(upstream))
    if grid.tsne["enabled"]:
        for job in tsne_jobs(plans, grid):
            needs = tuple(spec.out for plan in job.plans for _, spec in training_stages(plan))
            nodes[job.png] = StageNode("tsne", job.png, "all methods", job, needs)
    for path, node in nodes.items():  # keep only the waits on stages that run: the others are done
        nodes[path] = StageNode(node.stage, node.out, node.label, node.spec, _running(node.needs, nodes))
    return list(nodes.values())


def _running(needs: tuple[Path, ...], nodes: dict[Path, StageNode]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(path for path in needs if path in nodes))


def tsne_jobs(plans: list[CellPlan], grid: GridConfig) -> list[TsneJob]:
    """One picture per method (and model, task, n, seed) that is not drawn yet."""
    by_picture: dict[Path, list[CellPlan]] = {}
    for plan in plans:
        by_picture.setdefault(plan.tsne_png, []).append(plan)
    return [TsneJob(png, tuple(group), grid) for png, group in by_picture.items() if not png.is_file()]
