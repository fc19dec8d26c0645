"""Where a training step's time goes: torch.profiler over a few steps of one contender, top ops by self time.

    python -m benchmarks.profile_step --contender "HF Trainer SFT" --steps 3

This is how the fast path was chosen: on the embedded model the output layer (49k-vocabulary matmul, its
backward, and the cross-entropy over every position) was the largest item of an SFT step.
"""

from __future__ import annotations

import argparse
import copy
import tempfile

import torch
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
    parser.add_argument("--model", default=EMBEDDED_DEFAULT, help="an HF id or local path")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    args = parser.parse_args(argv)
    contender = next(c for c in CONTENDERS if c.name == args.contender)
    settings = Settings(args.batch_size, max_length=256, warmup=0, steps=args.steps, bf16=args.bf16)
    base, tokenizer = load_model_and_tokenizer(args.model, dtype="float32")
    records = load_records("alignment")[: settings.batch_size * settings.steps]
    set_seed(0)
    model = attach_lora(copy.deepcopy(base), LoraSettings())
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(
            contender, model, DataContext(tokenizer, "chat", settings.max_length), records,
            benchmark_arguments(settings, out),
        )  # fmt: skip
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            trainer.train()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if torch.cuda.is_available():  # on a GPU the host's time and the device's differ: show both
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
