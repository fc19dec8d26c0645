"""Cached, resumable stages: align -> finetune -> evaluate, keyed by a hash of their inputs.

A stage's folder name holds its key, so different inputs never share a folder and equal inputs always do:
one alignment serves every fine-tune that needs it, and a second run of a grid finds every stage done
(``summary.json`` / the result JSON are written last, atomically). A stage killed half-way resumes from
its newest Trainer checkpoint, losing at most the steps since then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainingArguments

from vaccine.align import AlignSpec
from vaccine.eval.generate import GenerationSettings
from vaccine.evaluate import EvaluateSpec
from vaccine.experiments.grid import Cell, GridConfig, key_settings, stable_hash
from vaccine.finetune import FinetuneSpec
from vaccine.judges import judge_version
from vaccine.lora import LoraSettings
from vaccine.stage_io import training_arguments


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@dataclass
class CellPlan:
    """The three stage specs of one grid cell, with their cache keys."""

    cell: Cell
    align_key: str | None
    align: AlignSpec | None
    finetune_key: str
    finetune: FinetuneSpec
    eval_key: str
    evaluate: EvaluateSpec

    @property
    def tsne_png(self) -> Path:
        return (
            self.evaluate.out.parent.parent / "tsne" / f"{slug(self.cell.method.label)}-{self.tsne_key}.png"
        )

    @property
    def tsne_key(self) -> str:
        cell = self.cell
        return stable_hash([self.align_key, cell.model, cell.task, cell.n, cell.seed, cell.method.finetune])


TRAINING_KEYS = ("epochs", "max_steps", "lr", "batch_size", "grad_accum", "weight_decay", "save_steps")


def _training(out: Path, settings: dict[str, Any], seed: int, dtype: str) -> dict[str, Any]:
    """A stage's ``TrainingArguments`` fields from its grid section."""
    return training_arguments(out, **{k: settings[k] for k in TRAINING_KEYS}, seed=seed, dtype=dtype)


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
    out = grid.out / "align" / f"{slug(cell.method.align['method'])}-{key}"
    knobs = {k: v for k, v in cell.method.align.items() if k != "method"}
    spec = AlignSpec(
        method=cell.method.align["method"],
        out=out,
        method_args=knobs,
        model=cell.model,
        data=settings["data"],
        num_samples=settings["num_samples"],
        helpful_data=settings["helpful_data"],
        helpful_share=settings["helpful_share"],
        self_distill_tokens=settings["self_distill_tokens"],
        # greedy answers of one base model, shared by every alignment of it in the grid (methods, seeds)
        self_distill_cache=grid.out / "self-distill" / f"{slug(cell.model)}-{stable_hash(shared)[:12]}.jsonl",
        template=grid.template,
        max_length=settings["max_length"],
        dtype=grid.dtype,
        lora=LoraSettings(**(settings["lora"] or grid.lora)),
        training_args=_training(out, settings, cell.seed, grid.dtype),
    )
    return key, spec


def _finetune_plan(grid: GridConfig, cell: Cell, align_key: str | None, aligned: Path | None):
    s = grid.finetune
    knobs = {k: v for k, v in cell.method.finetune.items() if k != "defense"}
    inputs = [
        align_key,
        cell.model,
        cell.task,
        cell.p,
        cell.n,
        cell.seed,
        s,
        cell.method.finetune,
        grid.lora,
        grid.template,
        grid.dtype,
    ]
    key = stable_hash(inputs)
    out = grid.out / "finetune" / f"{slug(cell.method.label)}-p{cell.p:g}-{key}"
    args = _training(out, s, cell.seed, grid.dtype)
    spec = FinetuneSpec(
        out=out,
        training=TrainingArguments(**args),
        model=cell.model,
        aligned=aligned,
        task=cell.task,
        task_source=s["task_source"],
        p=cell.p,
        n=cell.n,
        harmful=s["harmful"],
        alignment_data=s["alignment_data"],
        lora_mode=s["lora_mode"],
        defense=cell.method.finetune["defense"],
        defense_args=knobs,
        template=grid.template,
        max_length=s["max_length"],
        dtype=grid.dtype,
        lora=LoraSettings(**grid.lora),
        drift_every=s["drift_every"],
        drift_samples=s["drift_samples"],
    )
    return key, spec


def plan_cell(grid: GridConfig, cell: Cell) -> CellPlan:
    """Build (and so validate) every stage spec of a cell, and its cache keys."""
    align_key, align = _align_plan(grid, cell)
    aligned = align.out if align else None
    finetune_key, finetune = _finetune_plan(grid, cell, align_key, aligned)
    e = grid.evaluate
    answers_key = stable_hash([finetune_key, {k: v for k, v in e.items() if k != "judge"}])
    judge_key = stable_hash(judge_version(e["judge"]))[:8]
    eval_key = f"{answers_key}-j{judge_key}"
    double = aligned is not None and finetune.lora_mode == "double"
    evaluate = EvaluateSpec(
        out=grid.out / "eval" / f"{slug(cell.method.label)}-p{cell.p:g}-{eval_key}.json",
        model=cell.model,
        adapters=[aligned, finetune.out] if double else [finetune.out],
        harmful_prompts=e["harmful_prompts"],
        num_harmful=e["num_harmful"],
        task=cell.task,
        task_source=grid.finetune["task_source"],
        num_task=e["num_task"],
        strict=e["strict"],
        judge=e["judge"],
        generation=GenerationSettings(e["max_new_tokens"], e["batch_size"], grid.template, e["engine"]),
        reference_adapters=[aligned] if aligned else [],
        num_drift=e["num_drift"],
        benign_prompts=e["benign_prompts"],
        num_benign=e["num_benign"],
        seed=cell.seed,
        dtype=grid.dtype,
    )
    return CellPlan(cell, align_key, align, finetune_key, finetune, eval_key, evaluate)


def earlier_answers(plan: CellPlan) -> Path | None:
    """An evaluation of the same model, prompts and generation settings under another judge: its answers
    can be judged again instead of generated again (file names hold the answers' key, then the judge's)."""
    stem = plan.evaluate.out.stem.rsplit("-j", 1)[0]
    found = sorted(p for p in plan.evaluate.out.parent.glob(f"{stem}-j*.json") if p != plan.evaluate.out)
    return found[-1] if found else None


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
        },
        "artifacts": {"tsne_png": str(plan.tsne_png), "eval_json": str(plan.evaluate.out)},
        "config": {
            "align": plan.align.to_dict() if plan.align else None,
            "finetune": plan.finetune.to_dict(),
            "evaluate": result["config"],
        },
        "timings": result["timings"],
        "versions": versions,
        "created": result["date"],
    }
