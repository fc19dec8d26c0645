"""Trainer callbacks that leave a readable trace of a run on disk."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback


class JsonlLogger(TrainerCallback):
    """Appends every Trainer log (loss, clean/perturbed loss, step time, memory) as one JSON line.

    A line is flushed as soon as it is logged, so a killed run keeps its log up to the last step; on
    resume the Trainer restarts from a checkpoint and later lines simply continue the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")
