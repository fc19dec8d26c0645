"""Where a training step's time goes: torch.profiler over a few steps of one contender, top ops by self time.

    python -m benchmarks.profile_step --contender "HF Trainer SFT" --steps 3

This is how the fast path was chosen: on the embedded model the output layer (49k-vocabulary matmul, its
backward, and the cross-entropy over every position) was the largest item of an SFT step.
"""

from __future__ import annotations

import argparse
import copy
import tempfile

from torch.profiler import ProfilerActivity, profile
from transformers import set_seed

from benchmarks.step_time import CONTENDERS, Settings, benchmark_arguments, build_trainer
from vaccine.data.context import DataContext
from vaccine.data.resolve import load_records
from vaccine.lora import LoraSettings, attach_lora
from vaccine.models import EMBEDDED_DEFAULT, load_model_and_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    parser.add_argument("--contender", default="HF Trainer SFT", choices=[c.name for c in CONTENDERS])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)  # as docs/profile.md was measured
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args(argv)
    contender = next(c for c in CONTENDERS if c.name == args.contender)
    settings = Settings(batch_size=args.batch_size, max_length=256, warmup=0, steps=args.steps)
    base, tokenizer = load_model_and_tokenizer(EMBEDDED_DEFAULT, dtype="float32")
    records = load_records("alignment")[: settings.batch_size * settings.steps]
    set_seed(0)
    model = attach_lora(copy.deepcopy(base), LoraSettings())
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(
            contender, model, DataContext(tokenizer, "chat", settings.max_length), records,
            benchmark_arguments(settings, out),
        )  # fmt: skip
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
