"""FinetuneTrainer: the provider's fine-tuning of a user's data, and the fine-tune-stage defense protocol.

A fine-tune-stage defense (EWC, KL, Vlguard, Lisa; registered in :mod:`vaccine.defenses`) is what a provider
can do while fine-tuning on a user's data: change the data, add a loss term, or choose the batches. It is a
:class:`FinetuneDefense` whose hooks receive the trainer; through it a defense may use only

- ``trainer.model``, ``trainer.args`` and ``trainer.state`` (the ``transformers.Trainer`` attributes);
- :meth:`FinetuneTrainer.prepare_inputs`: a batch of its own, moved to the model's device;
- :meth:`FinetuneTrainer.record`: log a term of the current micro-batch (summed over the optimizer step);
- :meth:`FinetuneTrainer.unwrap`: the model without the distributed wrappers (e.g. to switch adapters).

The trainer's default defense is :class:`FinetuneDefense` itself, whose hooks do nothing: the plain attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import TrainingArguments

from vaccine.data.context import DataContext
from vaccine.data.records import Record
from vaccine.metered import MeteredTrainer

__all__ = ["FinetuneContext", "FinetuneDefense", "FinetuneTrainer"]


@dataclass
class FinetuneContext:
    """What a fine-tune-stage defense may use besides the user's data."""

    data: DataContext
    alignment_records: list[Record]
    aligned_adapter: str | None
    lora_mode: str
    seed: int


class FinetuneDefense:
    """A fine-tune-stage defense. The default of every hook does nothing: that is the undefended attack."""

    name: ClassVar[str] = "none"  # set by DEFENSES.register
    uses_alignment_data: ClassVar[bool] = False
    needs_full_logits: ClassVar[bool] = False  # penalty() reads every position's logits

    def prepare_data(self, records: list[Record], context: FinetuneContext) -> list[Record]:
        """Change the user's fine-tuning set before training (Vlguard mixes safety data in)."""
        return records

    def setup(self, trainer: FinetuneTrainer, context: FinetuneContext) -> None:
        """Called once the trainer exists, before the first step (EWC computes its Fisher here)."""

    def next_inputs(self, trainer: FinetuneTrainer, inputs: dict[str, Any]) -> dict[str, Any]:
        """The micro-batch to train on now (Lisa swaps in alignment batches)."""
        return inputs

    def penalty(
        self, trainer: FinetuneTrainer, model: nn.Module, inputs: dict[str, Any], outputs: Any
    ) -> torch.Tensor | None:
        """An extra loss term for this micro-batch, or None."""
        return None


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
        defense = defense if defense is not None else FinetuneDefense()
        kwargs.setdefault("answer_only_logits", not defense.needs_full_logits)
        super().__init__(*args, **kwargs)
        self.defense = defense
        if context is None and type(self.defense).setup is not FinetuneDefense.setup:
            raise ValueError(f"the {self.defense.name} defense needs a FinetuneContext")
        if context is not None:
            self.defense.setup(self, context)

    # -- what a defense may use (besides model, args, state and record) ---------------------------------
    def prepare_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A batch the defense drew itself, its tensors moved to the device the model trains on."""
        return self._prepare_inputs(batch)

    def unwrap(self, model: nn.Module | None = None) -> nn.Module:
        """``model`` (default: the trained one) without the DDP/FSDP wrappers the accelerator added."""
        return self.accelerator.unwrap_model(self.model if model is None else model)

    # -- the step -----------------------------------------------------------------------------------------
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
            scaled = self.loss_is_scaled_for_accumulation(num_items_in_batch)
            self.record_loss("task_loss", loss, scaled)
            penalty = self.defense.penalty(self, model, inputs, outputs)
            if penalty is not None:
                # one term per optimizer step: each micro-batch adds its share after the Trainer's scaling
                penalty = penalty / self.accumulation_steps() if scaled else penalty
                self.record_loss("penalty", penalty, scaled)
                loss = loss + penalty
        return (loss, outputs) if return_outputs else loss
