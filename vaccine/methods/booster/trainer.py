"""BoosterTrainer: the alignment loss plus lambda times the harmful loss's drop after one simulated harmful
step, ``L_align(w) + lam * (L_harm(w) - L_harm(w - alpha * g / ||g||))`` with ``g`` the harmful gradient.

Per micro-batch, on its harmful half: pass 1 takes ``g`` at ``w`` and pass 2 the harmful gradient at the
shifted weights ``w - alpha * g / ||g||`` (the shift is undone exactly: the weights are copied back). As in
Booster's code, the step direction is treated as a constant (first order, no Hessian term), so the term's
gradient is ``lam * (g(w) - g(w'))``. It joins the alignment loss as ``(d . w) - (d . w).detach()``: zero
in value, ``d`` in gradient, so the Trainer's own backward applies it (gradient accumulation, DDP averaging)
and the logged loss stays the alignment loss. Both harmful passes run on the unwrapped model and take
gradients with ``torch.autograd.grad``: no parameter's ``.grad`` is touched and DDP does no extra all-reduce.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vaccine.answer_loss import causal_lm_loss
from vaccine.data.paired import split_paired
from vaccine.methods.paired import PairedTrainer

from .config import BoosterConfig

__all__ = ["BoosterTrainer"]


class BoosterTrainer(PairedTrainer):
    """``Trainer`` whose loss adds Booster's harmful-perturbation attenuation on each batch's harmful half.

    Logs, besides the metered trainer's metrics: ``alignment_loss``, ``harmful_loss`` (at ``w``) and
    ``harmful_loss_after_step`` (at the shifted weights); Booster trains the drop between them toward zero.
    """

    args: BoosterConfig
    config_class = BoosterConfig

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        inputs, harmful = split_paired(inputs)
        boosted = bool(harmful) and model.training and self.args.lam > 0
        # the simulated step moves the weights in place: it runs before the alignment forward saves them
        term = self.attenuation_term(harmful) if boosted else None
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if term is not None:
            scaled = self.loss_is_scaled_for_accumulation(num_items_in_batch)
            self.record_loss("alignment_loss", loss, scaled)
            loss = loss + (term / self.accumulation_steps() if scaled else term)
        return (loss, outputs) if return_outputs else loss

    def attenuation_term(self, harmful: dict[str, torch.Tensor]) -> torch.Tensor:
        """Zero in value; its gradient is ``lam * (g(w) - g(w'))`` for this micro-batch's harmful half."""
        model = self.accelerator.unwrap_model(self.model)
        params = [p for p in model.parameters() if p.requires_grad]
        before, grads = self._harmful_gradient(model, params, harmful)
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) + 1e-7
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(self.args.alpha * g / norm)
        try:
            after, shifted_grads = self._harmful_gradient(model, params, harmful)
        finally:
            with torch.no_grad():
                for p, original in zip(params, saved, strict=True):
                    p.copy_(original)
        self.record_loss("harmful_loss", before, False)
        self.record_loss("harmful_loss_after_step", after, False)
        lam = self.args.lam
        dot = sum((lam * (g - s) * p).sum() for p, g, s in zip(params, grads, shifted_grads, strict=True))
        return dot - dot.detach()

    def _harmful_gradient(
        self, model: nn.Module, params: list[torch.Tensor], harmful: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The harmful loss and its gradient with respect to ``params``, parameters' ``.grad`` untouched."""
        with self.compute_loss_context_manager():
            loss = causal_lm_loss(model, harmful)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss.detach(), [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
