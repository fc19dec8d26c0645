"""MeteredTrainer: a ``Trainer`` that logs what each optimizer step cost and what its loss terms were.

Every trainer of this package (alignment, attack, defenses) derives from it, so step time, peak memory and
the separate loss terms (clean/perturbed, task/penalty, ...) are logged the same way everywhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from vaccine.answer_loss import answer_token_loss, output_layer
from vaccine.errors import ConfigError
from vaccine.peak_memory import peak_memory_mb, reset_peak_memory

log = logging.getLogger(__name__)


class _CloseStep(TrainerCallback):
    """Ends each optimizer step's window: its wall time and peak memory join the trainer's metrics."""

    def __init__(self, trainer: MeteredTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._close_step_window()


class MeteredTrainer(Trainer):
    """Logs, per optimizer step and averaged over ``logging_steps``: every term passed to :meth:`record`,
    ``step_time`` (seconds, from fetching the step's batches to the optimizer step) and ``peak_memory_mb``
    (the step's own peak: :mod:`vaccine.peak_memory`).

    Training losses run the output layer on answer tokens only (:mod:`vaccine.answer_loss`): the same loss
    and gradients, a fraction of the head's cost. Pass ``answer_only_logits=False`` when a subclass needs the
    full logits of the training forward (the KL defense does).
    """

    # A subclass that reads its own knobs from ``args`` names their config class; a plain
    # ``TrainingArguments`` there would fail later with an AttributeError, so it fails here instead.
    config_class: ClassVar[type[TrainingArguments]] = TrainingArguments

    def __init__(self, *args: Any, answer_only_logits: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__} as `args`")
        self._check_fsdp_setup()
        self.answer_only_logits = answer_only_logits
        self._window: dict[str, float] = defaultdict(float)
        self._logged: dict[str, list[float]] = defaultdict(list)
        self._window_start = time.perf_counter()
        self._window_open = False  # True from get_batch_samples to the end of that optimizer step
        self.add_callback(_CloseStep(self))

    def _check_fsdp_setup(self) -> None:
        """FSDP as this package supports it: version 2 (``fully_shard``), whose LoRA shards are DTensors that
        :func:`vaccine.lora.gather_trainable_weights` gathers before saving. FSDP1's flat shards would be
        saved as a partial adapter, so it is refused. And accelerate builds FSDP only on GPUs: launched with
        an FSDP config on CPUs, processes silently train as DDP (each holding the whole model); say so."""
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if self.is_fsdp_enabled and plugin is not None and plugin.fsdp_version != 2:
            raise ConfigError(
                f"FSDP version {plugin.fsdp_version} is not supported: set `fsdp_version: 2` in the "
                "accelerate config's fsdp_config (as configs/accelerate/fsdp.yaml does)"
            )
        if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not self.is_fsdp_enabled:
            log.warning(
                "an FSDP config was given but accelerate runs %s (FSDP needs GPUs): each process holds the "
                "whole model, as with DDP",
                self.accelerator.distributed_type.value,
            )

    def run_summary(self) -> dict[str, Any]:
        """Trainer-specific facts for the run's summary.json (e.g. how many perturbation passes ran)."""
        return {}

    def record(self, key: str, value: torch.Tensor | float) -> None:
        """Add a loss term of the current micro-batch; terms sum over the accumulation window."""
        self._window[key] += float(value.detach().float()) if torch.is_tensor(value) else float(value)

    def record_loss(self, key: str, value: torch.Tensor, scaled: bool) -> None:
        """Record a training micro-batch's loss term as its share of the step's mean, the way the Trainer
        logs the loss: ``scaled`` terms are already divided over the accumulation window, others are divided
        here. Evaluation passes (``prediction_step`` calls ``compute_loss`` too) are not recorded."""
        if self.model.training:
            self.record(key, value if scaled else value / self.accumulation_steps())

    def accumulation_steps(self) -> int:
        """Micro-batches in this optimizer step (the Trainer's loop sets it; a direct caller may not)."""
        return getattr(self, "current_gradient_accumulation_steps", None) or 1

    def loss_is_scaled_for_accumulation(self, num_items_in_batch: Any) -> bool:
        """Mirror of the Trainer's own rule, so extra passes and loss terms weigh micro-batches as it does."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
            self.compute_loss_func is not None
        )

    def _uses_answer_only_logits(self, model: torch.nn.Module, inputs: dict[str, Any]) -> bool:
        """The fast path applies to training steps with plain token labels and the default loss."""
        plain_loss = self.label_smoother is None and self.compute_loss_func is None
        return (
            self.answer_only_logits
            and model.training
            and plain_loss
            and "labels" in inputs
            and output_layer(model) is not None
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._uses_answer_only_logits(model, inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        count = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss, outputs = answer_token_loss(model, inputs, count)
        if self.args.average_tokens_across_devices and count is not None:
            loss = loss * self.accelerator.num_processes  # as the Trainer does: gradients are averaged
        return (loss, outputs) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator: Iterator, num_batches: int, device: torch.device):
        self._window_start = time.perf_counter()
        self._window_open = True
        reset_peak_memory(device)
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _close_step_window(self) -> None:
        for key, value in self._window.items():
            self._logged[key].append(value)
        self._logged["step_time"].append(time.perf_counter() - self._window_start)
        self._logged["peak_memory_mb"].append(peak_memory_mb(self.args.device))
        self._window = defaultdict(float)
        self._window_open = False

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs gain the mean of the per-step metrics since the previous log."""
        if "loss" in logs and self._logged:
            for key, values in self._logged.items():
                logs[key] = round(sum(values) / len(values), 6)
            self._logged = defaultdict(list)
        super().log(logs, start_time)
