"""A stage's run folder: training that resumes from the folder's newest checkpoint, the adapter saved
atomically with the run's summary, and adapters read back (merged in order) for evaluation."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from vaccine import __version__
from vaccine.errors import ModelError
from vaccine.io import write_json_atomic
from vaccine.lora import (
    ADAPTER_CONFIG,
    FULL_WEIGHTS,
    count_parameters,
    gather_trainable_weights,
    is_full_weights,
    is_sharded,
    load_merged,
    save_adapter,
)
from vaccine.metered import MeteredTrainer

log = logging.getLogger(__name__)


def adapter_dir(path: Path) -> Path:
    """Accept a run folder (with adapter/) or the adapter folder itself (a LoRA adapter, or a full
    fine-tune's weights)."""
    path = Path(path)
    candidate = path / "adapter" if (path / "adapter").is_dir() else path
    if not ((candidate / ADAPTER_CONFIG).is_file() or is_full_weights(candidate)):
        raise ModelError(f"{path}: no {ADAPTER_CONFIG} (or {FULL_WEIGHTS}) there or in {path / 'adapter'}")
    return candidate


def save_adapter_atomically(model: Any, target: Path, weights: dict[str, Any] | None = None) -> Path:
    """Write into ``target.partial`` and rename, so ``target`` is always a complete adapter or absent."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_adapter(model, staging, weights)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _is_complete(checkpoint: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last: a checkpoint without a readable one was cut short."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete Trainer checkpoint in ``output_dir``: where a killed run resumes. Checkpoints a
    kill cut short are removed (the Trainer would otherwise resume from, or write over, a partial one)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in checkpoints:
        if _is_complete(checkpoint):
            return str(checkpoint)
        log.warning("removing incomplete checkpoint %s (the run was killed while writing it)", checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)  # another rank may be removing it too
    return None


def train_and_save(trainer: MeteredTrainer, out: Path, **details: Any) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint if a killed run left one), save the adapter atomically and
    write ``summary.json``: the stage's ``details`` plus the fields every run reports."""
    checkpoint = last_checkpoint(trainer.args.output_dir)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    adapter = out / "adapter"
    # under FSDP each rank holds a shard of the adapter: all ranks gather it; under DDP each holds all of it
    weights = gather_trainable_weights(trainer.model) if is_sharded(trainer.model) else None
    if trainer.is_world_process_zero():  # one rank writes
        save_adapter_atomically(trainer.model, adapter, weights)
    trainable, total = count_parameters(trainer.model)
    summary = {
        **details,
        **trainer.run_summary(),
        "adapter": str(adapter),
        "steps": trainer.state.global_step,
        "resumed_from": checkpoint,
        "train_loss": result.training_loss,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "vaccine_version": __version__,
    }
    if trainer.is_world_process_zero():
        write_json_atomic(out / "summary.json", summary)
    trainer.accelerator.wait_for_everyone()  # no rank returns before the stage's outputs exist
    return summary


def load_merged_model(
    model: str, adapters: list[Path], *, dtype: str = "float32", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """The base model with each adapter merged in, in order: [alignment, fine-tuning] for Double-LoRA."""
    from vaccine.models import load_model_and_tokenizer

    loaded, tokenizer = load_model_and_tokenizer(model, dtype=dtype, trust_remote_code=trust_remote_code)
    for path in adapters:
        loaded = load_merged(loaded, adapter_dir(path))
    return loaded.eval(), tokenizer
