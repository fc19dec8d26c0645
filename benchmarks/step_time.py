"""Training-step time and peak memory of every alignment contender, on the same model, data and settings.

Contenders: a plain ``transformers.Trainer`` SFT step (what a user would run instead of this package), our
SFT, Vaccine (tau=1), Accelerated Vaccine (tau=10, 100) and RepNoise. Each starts from the same weights and
the same fresh LoRA adapter and trains ``warmup + steps`` optimizer steps on the same real alignment data.
Step time is the wall time between consecutive optimizer steps (the whole step: data, every pass, the
optimizer), so Vaccine's first pass, which runs while the step's batches are fetched, is inside it.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from benchmarks.memory import peak_memory
from vaccine.data.context import DataContext
from vaccine.data.records import Record
from vaccine.lora import LoraSettings, attach_lora
from vaccine.methods import METHODS
from vaccine.settings import TrainingSettings


@dataclass(frozen=True)
class Contender:
    name: str
    method: str | None  # an alignment method of the registry; None: the plain transformers.Trainer
    knobs: dict[str, Any] = field(default_factory=dict)
    tau: int = 1


CONTENDERS = [
    Contender("HF Trainer SFT", None),
    Contender("vaccine SFT", "sft"),
    Contender("Vaccine tau=1", "vaccine", {"rho": 2.0, "tau": 1}),
    Contender("Vaccine tau=10", "vaccine", {"rho": 2.0, "tau": 10}, tau=10),
    Contender("Vaccine tau=100", "vaccine", {"rho": 2.0, "tau": 100}, tau=100),
    Contender("T-Vaccine, 8 blocks", "vaccine", {"rho": 2.0, "layers_per_step": 8, "probe_samples": 16}),
    Contender("RepNoise", "repnoise"),
    Contender("Booster", "booster"),
]


@dataclass
class Settings:
    batch_size: int = 5
    max_length: int = 160
    warmup: int = 1
    steps: int = 10
    bf16: bool = False


class StepClock(TrainerCallback):
    """Wall time of every optimizer step, and whether it ran a Vaccine perturbation pass."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.perturbed: list[bool] = []
        self._last = 0.0
        self._passes = 0
        self.trainer: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now
        passes = getattr(self.trainer, "perturbation_passes", 0)
        self.perturbed.append(passes > self._passes)
        self._passes = passes


def benchmark_arguments(settings: Settings, out: str) -> dict[str, Any]:
    """The same ``TrainingArguments`` fields for every contender: no checkpoints, no per-step logging cost."""
    training = TrainingSettings(
        out=Path(out),
        epochs=1,
        max_steps=settings.warmup + settings.steps,
        lr=1e-4,
        batch_size=settings.batch_size,
    )
    args = training.training_arguments("bfloat16" if settings.bf16 else "float32")
    args.update(save_strategy="no", logging_steps=1000, disable_tqdm=True)
    return args


def build_trainer(
    contender: Contender,
    model: torch.nn.Module,
    data: DataContext,
    records: list[Record],
    args: dict[str, Any],
) -> Trainer:
    """The contender's trainer, built the way `vaccine align` builds it (or a plain Trainer)."""
    if contender.method is None:
        method = METHODS.build("sft")
        return Trainer(
            model=model,
            args=TrainingArguments(**args),
            train_dataset=method.train_dataset(records, data),
            data_collator=method.collator(data),
        )
    method = METHODS.build(contender.method, **contender.knobs)
    return method.trainer_class(
        model=model,
        args=method.build_config(args),
        train_dataset=method.train_dataset(records, data),
        data_collator=method.collator(data),
        **method.trainer_kwargs(data),
    )


def measure(
    contender: Contender,
    base: torch.nn.Module,
    tokenizer: Any,
    records: list[Record],
    settings: Settings,
) -> dict[str, Any]:
    """Train the contender from a fresh copy of ``base`` with a fresh adapter; its step times and peak."""
    set_seed(0)
    model = attach_lora(copy.deepcopy(base), LoraSettings())
    data = DataContext(tokenizer, "chat", settings.max_length)
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(contender, model, data, records, benchmark_arguments(settings, out))
        clock = StepClock()
        clock.trainer = trainer
        trainer.add_callback(clock)
        with peak_memory(trainer.args.device) as peak:
            trainer.train()
    del trainer, model
    return summarize(contender, clock, settings.warmup, peak)


def summarize(contender: Contender, clock: StepClock, warmup: int, peak) -> dict[str, Any]:
    times, perturbed = clock.times[warmup:], clock.perturbed[warmup:]
    plain = [t for t, p in zip(times, perturbed, strict=True) if not p]
    with_pass = [t for t, p in zip(times, perturbed, strict=True) if p]
    return {
        "contender": contender.name,
        "tau": contender.tau,
        "steps_measured": len(times),
        "median_step_s": statistics.median(times),
        "mean_step_s": statistics.fmean(times),
        "median_plain_step_s": statistics.median(plain) if plain else None,
        "median_perturbed_step_s": statistics.median(with_pass) if with_pass else None,
        "peak_memory_mb": peak.peak_mb,
        "added_memory_mb": peak.added_mb,
        "step_times_s": [round(t, 4) for t in clock.times],
        "perturbed": clock.perturbed,
    }


def amortized_step(row: dict[str, Any], perturbed_step_s: float | None) -> float:
    """Expected step time over a whole run: one perturbation step in every tau (the median hides it).
    A tau>1 run that measured no perturbation step borrows ``perturbed_step_s`` (tau=1's median)."""
    if row["tau"] == 1:
        return row["median_step_s"]
    plain = row["median_plain_step_s"] or row["median_step_s"]
    pert = row["median_perturbed_step_s"] or perturbed_step_s or plain
    return ((row["tau"] - 1) * plain + pert) / row["tau"]
