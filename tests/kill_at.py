"""Run the vaccine CLI and SIGKILL this very process at a chosen point: a real `kill -9`, no cleanup.

    python tests/kill_at.py POINT STEP -- vaccine-args...

POINT: ``step`` (while training the step after optimizer step STEP, whose checkpoint is complete),
``checkpoint`` (while writing checkpoint-STEP: model and optimizer written, trainer state not yet) or
``evaluate`` (after the harmful answers were generated, before the task answers).
"""

from __future__ import annotations

import os
import signal
import sys

from transformers import Trainer


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_in(method_name: str, step: int) -> None:
    """SIGKILL when ``Trainer.<method_name>`` runs at optimizer step ``step``."""
    original = getattr(Trainer, method_name)

    def patched(self, *args, **kwargs):
        if self.state.global_step == step:
            die()
        return original(self, *args, **kwargs)

    setattr(Trainer, method_name, patched)


def arm(point: str, step: int) -> None:
    if point == "step":
        die_in("training_step", step)
    elif point == "checkpoint":
        die_in("_save_rng_state", step)  # model and optimizer are written, the trainer state is not
    elif point == "evaluate":
        import vaccine.evaluate

        vaccine.evaluate.finetune_accuracy = lambda *args, **kwargs: die()
    else:
        raise SystemExit(f"unknown point {point!r}")


if __name__ == "__main__":
    point, step, separator, *argv = sys.argv[1:]
    assert separator == "--"
    arm(point, int(step))
    from vaccine.cli import main

    sys.exit(main(argv))
