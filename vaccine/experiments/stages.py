"""Cached, resumable stages: align -> finetune -> (posthoc) -> evaluate, keyed by a hash of their inputs.

A stage's folder name holds its key, so different inputs never share a folder and equal inputs always do:
one alignment serves every fine-tune that needs it, and a second run of a grid finds every stage done
(``summary.json`` / the result JSON are written last, atomically). A stage killed half-way resumes from
its newest Trainer checkpoint, losing at most the steps since then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaccine.align import AlignSpec
from vaccine.errors import SettingError
from vaccine.evaluate import EvaluateSpec
from vaccine.experiments.grid import Cell, GridConfig, key_settings, stable_hash
from vaccine.finetune import FinetuneSpec
from vaccine.judges import judge_version
from vaccine.posthoc import PosthocSpec
from vaccine.settings import LoraFields


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@dataclass
class CellPlan:
    """The stage specs of one grid cell, with their cache keys (no post-hoc stage: ``posthoc`` is None)."""

    cell: Cell
    align_key: str | None
    align: AlignSpec | None
    finetune_key: str
    finetune: FinetuneSpec
    eval_key: str
    evaluate: EvaluateSpec
    posthoc_key: str | None = None
    posthoc: PosthocSpec | None = None

    @property
    def tsne_png(self) -> Path:
        return (
            self.evaluate.out.parent.parent / "tsne" / f"{slug(self.cell.method.label)}-{self.tsne_key}.png"
        )

    @property
    def tsne_key(self) -> str:
        cell = self.cell
        return stable_hash([self.align_key, cell.model, cell.task, cell.n, cell.seed, cell.method.finetune])


def _align_plan(grid: GridConfig, cell: Cell) -> tuple[str | None, AlignSpec | None]:
    if cell.method.align is None:
        return None, None
    settings = grid.align
    inputs = [
        cell.model,
        cell.method.align,
        key_settings(settings),
        grid.lora,
        grid.template,
        grid.dtype,
        cell.seed,
    ]
    key = stable_hash(inputs)
    shared = [cell.model, settings["self_distill_tokens"], grid.template, grid.dtype]
    if settings["helpful_teacher"] is not None:  # a teacher's answers: another cache (old keys stay)
        shared.append(settings["helpful_teacher"])
    out = grid.out / "align" / f"{slug(cell.method.align['method'])}-{key}"
    knobs = {k: v for k, v in cell.method.align.items() if k != "method"}
    section = {k: v for k, v in settings.items() if k != "lora"}
    spec = AlignSpec(
        **section,
        **LoraFields.lora_fields(settings["lora"] or grid.lora),
        method=cell.method.align["method"],
        method_args=knobs,
        out=out,
        model=cell.model,
        template=grid.template,
        dtype=grid.dtype,
        seed=cell.seed,
        # greedy answers of one base model, shared by every alignment of it in the grid (methods, seeds)
        self_distill_cache=grid.out / "self-distill" / f"{slug(cell.model)}-{stable_hash(shared)[:12]}.jsonl",
    )
    return key, spec


def attack_label(grid: GridConfig, cell: Cell) -> str:
    """Whose attack a cell's fine-tune is: a method with a post-hoc repair shares the fine-tune (and its
    folder) of the grid's first method with the same alignment and defense ("SFT + Antidote" repairs SFT's
    attacked model), so the attack runs once however many repairs follow it."""
    method = cell.method
    if method.posthoc is None:
        return method.label
    same = [m for m in grid.methods if (m.align, m.finetune) == (method.align, method.finetune)]
    return min(same, key=lambda m: m.posthoc is not None).label


def _finetune_plan(grid: GridConfig, cell: Cell, align_key: str | None, aligned: Path | None):
    settings = grid.finetune
    inputs = [
        align_key,
        cell.model,
        cell.task,
        cell.p,
        cell.n,
        cell.seed,
        settings,
        cell.method.finetune,
        grid.lora,
        grid.template,
        grid.dtype,
    ]
    key = stable_hash(inputs)
    out = grid.out / "finetune" / f"{slug(attack_label(grid, cell))}-p{cell.p:g}-{key}"
    spec = FinetuneSpec(
        **settings,
        **LoraFields.lora_fields(grid.lora),
        defense=cell.method.finetune["defense"],
        defense_args={k: v for k, v in cell.method.finetune.items() if k != "defense"},
        out=out,
        model=cell.model,
        aligned=aligned,
        task=cell.task,
        p=cell.p,
        n=cell.n,
        template=grid.template,
        dtype=grid.dtype,
        seed=cell.seed,
    )
    return key, spec


def _posthoc_plan(
    grid: GridConfig, cell: Cell, finetune_key: str, attacked: list[Path]
) -> tuple[str | None, PosthocSpec | None]:
    """The repair of the fine-tuned model (``attacked``: its adapters in merge order), if the method asks."""
    if cell.method.posthoc is None:
        return None, None
    repair = cell.method.posthoc
    key = stable_hash([finetune_key, repair, grid.posthoc, grid.lora, grid.template, grid.dtype, cell.seed])
    spec = PosthocSpec(
        **grid.posthoc,
        **LoraFields.lora_fields(grid.lora),
        method=repair["method"],
        method_args={k: v for k, v in repair.items() if k != "method"},
        attacked=attacked,
        out=grid.out / "posthoc" / f"{slug(cell.method.label)}-p{cell.p:g}-{key}",
        model=cell.model,
        template=grid.template,
        dtype=grid.dtype,
        seed=cell.seed,
    )
    return key, spec


# Settings a grid gives at its top level, by their YAML names.
TOP_LEVEL = {"p": "p", "n": "n", "seed": "seeds", "model": "models", "task": "tasks", "template": "template"}


@contextmanager
def yaml_names(grid: GridConfig, section: str, cell: Cell) -> Iterator[None]:
    """Errors on a setting name it by its path in the grid's YAML (``demo.yaml: align.num_samples``)."""
    try:
        yield
    except SettingError as err:
        name = err.setting
        if name in TOP_LEVEL or name == "dtype":
            path = TOP_LEVEL.get(name, name)
        elif name in ("method", "method_args", "defense", "defense_args"):
            stage = "finetune" if name.startswith("defense") else section
            path = f"methods[{cell.method.label}].{stage}.{name.removesuffix('_args')}"
        elif name.startswith("lora_"):
            path = f"lora.{name.removeprefix('lora_')}"
        else:
            path = f"{section}.{name}"
        raise err.written_as(f"{grid.source}: {path}") from err


def plan_cell(grid: GridConfig, cell: Cell) -> CellPlan:
    """Build (and so validate) every stage spec of a cell, and its cache keys."""
    with yaml_names(grid, "align", cell):
        align_key, align = _align_plan(grid, cell)
    aligned = align.out if align else None
    with yaml_names(grid, "finetune", cell):
        finetune_key, finetune = _finetune_plan(grid, cell, align_key, aligned)
    double = aligned is not None and finetune.lora_mode == "double"
    served = [aligned, finetune.out] if double else [finetune.out]  # Double-LoRA: both merged, in order
    with yaml_names(grid, "posthoc", cell):
        posthoc_key, posthoc = _posthoc_plan(grid, cell, finetune_key, served)
    if posthoc is not None:
        served = posthoc.repaired
    model_key = posthoc_key or finetune_key
    answers_key = stable_hash([model_key, {k: v for k, v in grid.evaluate.items() if k != "judge"}])
    eval_key = f"{answers_key}-j{stable_hash(judge_version(grid.evaluate['judge']))[:8]}"
    with yaml_names(grid, "evaluate", cell):
        evaluate = _evaluate_plan(grid, cell, eval_key, aligned, served)
    return CellPlan(cell, align_key, align, finetune_key, finetune, eval_key, evaluate, posthoc_key, posthoc)


def _evaluate_plan(
    grid: GridConfig, cell: Cell, key: str, aligned: Path | None, served: list[Path]
) -> EvaluateSpec:
    """The served model (``served``: its adapters merged in order), judged; drift against ``aligned``."""
    return EvaluateSpec(
        **grid.evaluate,
        out=grid.out / "eval" / f"{slug(cell.method.label)}-p{cell.p:g}-{key}.json",
        model=cell.model,
        adapters=served,
        task=cell.task,
        task_source=grid.finetune["task_source"],
        reference_adapters=[aligned] if aligned else [],
        drift_max_length=grid.align["max_length"],  # drift on alignment samples cut as the alignment cut them
        seed=cell.seed,
        template=grid.template,
        dtype=grid.dtype,
    )


def earlier_answers(plan: CellPlan) -> Path | None:
    """An evaluation of the same model, prompts and generation settings under another judge: its answers
    can be judged again instead of generated again (file names hold the answers' key, then the judge's)."""
    stem = plan.evaluate.out.stem.rsplit("-j", 1)[0]
    found = sorted(
        p
        for p in plan.evaluate.out.parent.glob(f"{stem}-j*.json")
        if p != plan.evaluate.out and not p.name.endswith(ROW_SUFFIX) and p.is_file()  # not a broken link
    )
    return found[-1] if found else None


# A cell's store row lives as a file beside its evaluation JSON: the files are the record of truth and the
# SQLite store an index rebuilt from them, so workers on many machines never write one database file.
ROW_SUFFIX = ".row.json"


def row_path(eval_json: Path) -> Path:
    """Where the store row of the evaluation ``eval_json`` lives: ``eval/<name>.row.json``."""
    return eval_json.with_name(eval_json.stem + ROW_SUFFIX)


def is_done(folder: Path) -> bool:
    """A training stage is done when its summary exists: it is written last, atomically."""
    return (folder / "summary.json").is_file()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill; the rest of the log is still good
            continue
    return rows


def _summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def step_cost(folder: Path | None) -> tuple[float | None, float | None]:
    """(median step time in s, peak memory in MB) from a stage's per-step log."""
    steps = [row for row in read_jsonl(folder / "log.jsonl") if "step_time" in row] if folder else []
    if not steps:
        return None, None
    times = sorted(row["step_time"] for row in steps)
    return times[len(times) // 2], max(row["peak_memory_mb"] for row in steps)


def build_row(plan: CellPlan, result: dict[str, Any], versions: dict[str, Any]) -> dict[str, Any]:
    """One store row: the cell, its metrics, curves, costs and the full resolved configs."""
    cell = plan.cell
    align_time, align_memory = step_cost(plan.align.out if plan.align else None)
    ft_time, ft_memory = step_cost(plan.finetune.out)
    repair_time, repair_memory = step_cost(plan.posthoc.out if plan.posthoc else None)
    curves = [r for r in read_jsonl(plan.finetune.out / "drift.jsonl")]
    return {
        "key": plan.eval_key,
        "label": cell.method.label,
        "model": cell.model,
        "task": cell.task,
        "p": cell.p,
        "n": cell.n,
        "seed": cell.seed,
        "align_method": cell.method.align["method"] if cell.method.align else None,
        "finetune_defense": plan.finetune.defense,
        "lora_mode": plan.finetune.lora_mode,
        "posthoc_method": plan.posthoc.method if plan.posthoc else None,
        "metrics": result["metrics"],
        "verdicts": {
            "prompts": [r["prompt"] for r in result["records"]["harmful"]],
            "kinds": [r.get("kind") for r in result["records"]["harmful"]],
        },
        "task_outcomes": [bool(r["correct"]) for r in result["records"].get("task", [])],
        "curves": {"drift": curves},
        "judge": result.get("judge"),
        "cost": {
            "align_step_time_s": align_time,
            "align_peak_memory_mb": align_memory,
            "finetune_step_time_s": ft_time,
            "finetune_peak_memory_mb": ft_memory,
            "posthoc_step_time_s": repair_time,
            "posthoc_peak_memory_mb": repair_memory,
            "posthoc_time_s": _summary(plan.posthoc.out).get("repair_time_s") if plan.posthoc else None,
        },
        "artifacts": {"tsne_png": str(plan.tsne_png), "eval_json": str(plan.evaluate.out)},
        "config": {
            "align": plan.align.to_dict() if plan.align else None,
            "finetune": plan.finetune.to_dict(),
            "posthoc": plan.posthoc.to_dict() if plan.posthoc else None,
            "evaluate": result["config"],
        },
        "timings": result["timings"],
        "versions": versions,
        "created": result["date"],
    }
