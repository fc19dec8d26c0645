"""VaccineTrainer: a ``transformers.Trainer`` that runs Vaccine's two-pass perturbation-aware step.

On a perturbation step (every ``tau``-th optimizer step, all of them when ``tau=1``):

1. pass 1, at the window's first :meth:`training_step`, for every micro-batch of the accumulation window
   (kept by :meth:`get_batch_samples`): forward, then ``torch.autograd.grad(loss, attention_outputs)``. No
   parameter gradient is touched and DDP does not all-reduce (``no_sync``). One norm over all layers, all
   micro-batches (and all ranks) gives eps_l = rho * g_l / ||g||, padding excluded. Not inside
   ``get_batch_samples`` itself: a resumed Trainer restores the RNG state (LoRA dropout) only after it, so
   a killed-and-resumed run would perturb differently from an uninterrupted one;
2. pass 2, in :meth:`training_step`: the Trainer's own step, with eps added to the attention outputs as
   a constant. The optimizer steps on these gradients.

Computing every micro-batch's eps before any pass 2 is what makes gradient accumulation 2x4 equal to a
batch of 8 (the official code zeroed gradients inside the step and lost them). Other steps are plain
Trainer steps; ``rho=0`` is exactly a plain ``Trainer`` (SFT).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vaccine.metered import MeteredTrainer

from .config import VaccineConfig
from .perturb import (
    add_perturbation,
    capture_outputs,
    draw_layers,
    find_attention_modules,
    layer_gradient_norms,
    perturbation_from_grads,
    squared_norm,
)

__all__ = ["VaccineConfig", "VaccineTrainer"]


class VaccineTrainer(MeteredTrainer):
    """Drop-in ``Trainer``: SFT (``rho=0``), Vaccine (``rho>0, tau=1``), Accelerated Vaccine (``tau>1``).

    Logs, per optimizer step (averaged over ``logging_steps``): ``clean_loss`` (the unperturbed loss),
    ``perturbed_loss`` (on perturbation steps), ``step_time`` in seconds and ``peak_memory_mb``.
    """

    args: VaccineConfig
    config_class = VaccineConfig

    def __init__(self, *args: Any, probe_batches: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.args.layers_per_step > 0 and not probe_batches:
            raise ValueError("layers_per_step > 0 (T-Vaccine) needs probe_batches of harmful data")
        self.probe_batches = probe_batches or []
        self._chosen: tuple[int, list[int]] | None = None  # (draw window, chosen block indices)
        self._pending_eps: list[list[torch.Tensor]] = []
        self._window_batches: tuple[list[dict[str, Any]], Any] | None = None
        self.perturbation_passes = 0

    def run_summary(self) -> dict[str, Any]:
        return {"perturbation_passes": self.perturbation_passes}

    # -- which modules, which steps ---------------------------------------------------------------------
    def attention_modules(self) -> list[nn.Module]:
        """The attention blocks (of the unwrapped model) that may receive eps."""
        if not hasattr(self, "_attention_modules"):
            found = find_attention_modules(self.model, self.args.perturb_modules)
            self._attention_modules = [module for _, module in found]
        return self._attention_modules

    def perturbed_modules(self) -> list[nn.Module]:
        """The blocks that receive eps this step: all of them (Vaccine), or T-Vaccine's ``layers_per_step``
        drawn by harmful-gradient norm, drawn again every ``resample_every`` steps."""
        modules = self.attention_modules()
        k = self.args.layers_per_step
        if k <= 0 or k >= len(modules):
            return modules
        window = self.state.global_step // self.args.resample_every
        if self._chosen is None or self._chosen[0] != window:
            self._chosen = (window, self._draw(modules, k, window))
        return [modules[i] for i in self._chosen[1]]

    def _draw(self, modules: list[nn.Module], k: int, window: int) -> list[int]:
        """T-Vaccine's draw, measured on the probe batches with the model of the window's first step: eval
        mode (no dropout, no RNG consumed), unwrapped (no DDP sync), a generator seeded by the run's seed and
        the window. (A run resumed mid-window measures the resumed model: its draw may differ.)"""
        model = self.accelerator.unwrap_model(self.model)
        training = model.training
        model.eval()
        try:
            batches = [self._prepare_inputs(b) for b in self.probe_batches]
            importance = layer_gradient_norms(model, modules, batches)
        finally:
            model.train(training)
        generator = torch.Generator().manual_seed(self.args.seed * 100_003 + window)
        return draw_layers(importance, k, generator)

    def is_perturbation_step(self) -> bool:
        """Every ``tau``-th optimizer step, counting from the first (step 0)."""
        return self.args.rho > 0 and self.state.global_step % self.args.tau == 0

    # -- pass 1 -----------------------------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator: Iterator, num_batches: int, device: torch.device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._pending_eps = []
        perturb = batch_samples and self.is_perturbation_step()
        self._window_batches = (batch_samples, num_items_in_batch) if perturb else None
        return batch_samples, num_items_in_batch

    def _clean_gradients(
        self, inputs: dict[str, Any], num_items_in_batch: Any, micro_batches: int
    ) -> list[torch.Tensor]:
        """Pass 1 on one micro-batch: dL/de_l for every perturbed module, parameters untouched."""
        model = self.model_wrapped
        model.train()
        inputs = self._prepare_inputs(inputs)
        modules = self.perturbed_modules()
        with self.accelerator.no_sync(model), capture_outputs(modules) as outputs:
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            if not self.loss_is_scaled_for_accumulation(num_items_in_batch):
                loss = loss / micro_batches
            grads = torch.autograd.grad(loss, outputs, allow_unused=True)
        self.record("clean_loss", loss)
        mask = inputs.get("attention_mask")
        grads = [torch.zeros_like(o) if g is None else g for g, o in zip(grads, outputs, strict=True)]
        if mask is not None:
            keep = mask.unsqueeze(-1).to(grads[0].dtype)
            grads = [g * keep for g in grads]
        return grads

    def _perturbations(
        self, batch_samples: list[dict[str, Any]], num_items_in_batch: Any
    ) -> list[list[torch.Tensor]]:
        """eps for every micro-batch of this optimizer step, under one norm (see module docstring)."""
        grads = [self._clean_gradients(b, num_items_in_batch, len(batch_samples)) for b in batch_samples]
        scope = self.args.perturbation_norm
        total = None
        if scope == "batch":
            total = sum(squared_norm(g, "batch") for g in grads)
            if self.accelerator.num_processes > 1:
                total = self.accelerator.reduce(total, reduction="sum")
        self.perturbation_passes += 1
        return [perturbation_from_grads(g, self.args.rho, None, scope, total) for g in grads]

    # -- pass 2 -----------------------------------------------------------------------------------------
    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        if self._window_batches is not None:  # the window's first micro-batch: pass 1 for all of them
            self._pending_eps = self._perturbations(*self._window_batches)
            self._window_batches = None
        elif not self._window_open and self.is_perturbation_step():
            # Called outside the Trainer's loop: this micro-batch is the whole window.
            self._pending_eps = self._perturbations([inputs], num_items_in_batch)
        if not self._pending_eps:
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.record("clean_loss", loss)
            return loss
        with add_perturbation(self.perturbed_modules(), self._pending_eps.pop(0)):
            loss = super().training_step(model, inputs, num_items_in_batch)
        self.record("perturbed_loss", loss)
        return loss
