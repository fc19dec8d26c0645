"""Shared stages of the tuning sweeps (alignment share, attack strength, rho): each stage is cached by its
folder, so a killed sweep resumes, and every evaluation uses tuning prompts only (`harmful-validation`,
never the reported AdvBench prompts). Imported by the `sweep_*.py` scripts beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaccine.align import AlignSpec, run_alignment
from vaccine.evaluate import EvaluateSpec, run_evaluate
from vaccine.finetune import FinetuneSpec, run_finetune
from vaccine.io import write_text_atomic

MAX_LENGTH = 160  # the demo's


def evaluate(
    out: Path,
    adapters: list[Path],
    *,
    num_task: int,
    num_benign: int,
    max_new_tokens: int = 32,
    **model: Any,
):
    """The evaluation's metrics (HS and its shares on `harmful-validation`, benign refusals, SST-2).
    ``model``: ModelSettings fields (``model``, ``template``) when the model is not the embedded default."""
    if not out.is_file():
        run_evaluate(
            EvaluateSpec(
                out=out,
                adapters=adapters,
                harmful_prompts="harmful-validation",
                num_task=num_task,
                num_benign=num_benign,
                max_new_tokens=max_new_tokens,
                **model,
            )
        )
    return json.loads(out.read_text())["metrics"]


def align(
    folder: Path,
    *,
    method: str,
    data: str,
    share: float,
    num_samples: int,
    lr: float,
    epochs: float = 1,
    lora_r: int = 8,
    full_finetune: bool = False,
    **knobs: Any,
) -> Path:
    """An aligned adapter: ``num_samples`` pairs, ``share`` of them benign prompts answered by the base
    model itself (self-distillation), the rest harmful prompts with safe answers from ``data``;
    ``full_finetune`` trains every weight instead (``lora_r`` unused)."""
    if not (folder / "summary.json").is_file():
        run_alignment(
            AlignSpec(
                method=method,
                out=folder,
                method_args=knobs,
                data=data,
                lora_r=lora_r,
                lora_alpha=max(1, lora_r // 2),  # the default alpha/r of 1/2
                epochs=epochs,
                lr=lr,
                num_samples=num_samples,
                helpful_data="benign" if share > 0 else None,
                helpful_share=share,
                max_length=MAX_LENGTH,
                full_finetune=full_finetune,
            )
        )
    return folder


def attack(folder: Path, aligned: Path, *, lr: float, p: float, n: int, epochs: float, **model: Any) -> Path:
    """The user's fine-tune on SST-2 with a share ``p`` of harmful pairs, on top of ``aligned`` (``model``:
    ModelSettings fields, as for :func:`evaluate`)."""
    if not (folder / "summary.json").is_file():
        run_finetune(
            FinetuneSpec(
                out=folder,
                epochs=epochs,
                lr=lr,
                aligned=aligned,
                p=p,
                n=n,
                max_length=MAX_LENGTH,
                **model,
            )
        )
    return folder


def table(rows: dict[str, dict[str, Any]], metrics: tuple[str, ...]) -> str:
    """A markdown table: one row per setting, each metric as 'value [low, high]'."""
    lines = ["| setting | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for name, values in rows.items():
        cells = [f"{values[m]:.1f} [{values[m + '_ci'][0]:.1f}, {values[m + '_ci'][1]:.1f}]" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(out: Path, rows: dict[str, dict[str, Any]], metrics: tuple[str, ...]) -> None:
    text = table(rows, metrics)
    write_text_atomic(out / "table.md", text)
    print(text, flush=True)


def progress(name: str, values: dict[str, Any], metrics: tuple[str, ...]) -> None:
    print(name, {m: round(values[m], 1) for m in metrics}, flush=True)
