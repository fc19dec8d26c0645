"""FinetuneTrainer: the provider's fine-tuning of a user's data, with an optional fine-tune-stage defense."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import TrainingArguments

from vaccine.defenses.base import FinetuneContext, FinetuneDefense
from vaccine.metered import MeteredTrainer


class FinetuneTrainer(MeteredTrainer):
    """A ``Trainer`` whose defense may swap batches (Lisa) and add a loss term (EWC, KL, Lisa's proximal).

    Logs ``task_loss`` (the user's data) and ``penalty`` (the defense's term) besides the total ``loss``.
    A penalty is treated as one term per optimizer step: under gradient accumulation each micro-batch
    contributes its share, so the total does not grow with the number of micro-batches.
    """

    args: TrainingArguments

    def __init__(
        self,
        *args: Any,
        defense: FinetuneDefense | None = None,
        context: FinetuneContext | None = None,
        **kwargs: Any,
    ) -> None:
        from vaccine.defenses.none import NoDefense

        defense = defense if defense is not None else NoDefense()
        kwargs.setdefault("answer_only_logits", not defense.needs_full_logits)
        super().__init__(*args, **kwargs)
        self.defense = defense
        if context is None and type(self.defense).setup is not FinetuneDefense.setup:
            raise ValueError(f"the {self.defense.name} defense needs a FinetuneContext")
        if context is not None:
            self.defense.setup(self, context)

    def _share_of_step(self, value: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
        """The part of a per-step quantity that one micro-batch contributes after the Trainer's scaling."""
        if self._loss_is_scaled_for_accumulation(num_items_in_batch):
            return value / self.current_gradient_accumulation_steps
        return value

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        chosen = self.defense.next_inputs(self, inputs)
        if chosen is not inputs:
            num_items_in_batch = None  # the token count was taken from the batch that was swapped out
        return super().training_step(model, chosen, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            steps = self.current_gradient_accumulation_steps
            scaled = self._loss_is_scaled_for_accumulation(num_items_in_batch)
            self.record("task_loss", loss if scaled else loss / steps)
            penalty = self.defense.penalty(self, model, inputs, outputs)
            if penalty is not None:
                penalty = self._share_of_step(penalty, num_items_in_batch)
                self.record("penalty", penalty if scaled else penalty / steps)
                loss = loss + penalty
        return (loss, outputs) if return_outputs else loss
