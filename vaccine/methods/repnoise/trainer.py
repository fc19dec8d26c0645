"""RepNoiseTrainer: a metered ``Trainer`` whose loss adds RepNoise's terms on each batch's harmful half."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vaccine.answer_loss import IGNORE_INDEX
from vaccine.data.paired import split_paired
from vaccine.methods.paired import PairedTrainer

from .config import RepNoiseConfig
from .losses import bounded_ascent, representation_noise_loss

__all__ = ["RepNoiseTrainer"]


class RepNoiseTrainer(PairedTrainer):
    """``Trainer`` whose loss adds RepNoise's terms on the ``harmful_*`` half of each batch.

    Logs, besides the metered trainer's metrics: ``harmless_loss``, ``harmful_loss`` (the harmful answer's
    CE, which should rise) and ``noise_loss`` (the MMD, which should fall). Batches without ``harmful_*``
    keys (e.g. an ordinary eval set) get the plain loss. The harmful columns survive
    ``remove_unused_columns=True``.
    """

    args: RepNoiseConfig
    config_class = RepNoiseConfig

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        inputs, harmful = split_paired(inputs)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if harmful:
            scaled = self.loss_is_scaled_for_accumulation(num_items_in_batch)
            self.record_loss("harmless_loss", loss, scaled)
            loss = loss + self._harmful_terms(model, harmful, scaled)
        return (loss, outputs) if return_outputs else loss

    def _harmful_terms(
        self, model: nn.Module, harmful: dict[str, torch.Tensor], scaled: bool
    ) -> torch.Tensor:
        """beta * noise - alpha * ascent on one harmful micro-batch, divided by the accumulation steps when
        the harmless loss is already normalised over the whole window, so both sum to window means."""
        out = model(**harmful, output_hidden_states=True)
        # noise the harmful answer only: harmful prompts also open the harmless half, whose safe answer must
        # stay reachable from a harmful prompt's representations
        mask = harmful["labels"] != IGNORE_INDEX
        noise = representation_noise_loss(out.hidden_states[1:], mask, self.args.noise_tokens)
        ascent = bounded_ascent(out.loss, out.logits.shape[-1])
        self.record_loss("harmful_loss", out.loss, False)
        self.record_loss("noise_loss", noise, False)
        terms = self.args.beta * noise + self.args.alpha * ascent
        return terms / self.accumulation_steps() if scaled else terms
