"""What the align and finetune stages share on disk: atomic adapter saves and resuming from checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from vaccine.lora import save_adapter


def save_adapter_atomically(model: Any, target: Path) -> Path:
    """Write into ``target.partial`` and rename, so ``target`` is always a complete adapter or absent."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_adapter(model, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete Trainer checkpoint in ``output_dir``: where a killed run resumes."""
    folder = Path(output_dir)
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
