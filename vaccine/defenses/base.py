"""The two kinds of defense and what each may touch.

Alignment-stage methods (SFT, Vaccine, RepNoise) decide how the aligned model is trained: which config
class, which trainer, which data. Fine-tune-stage defenses (EWC, KL, Vlguard, Lisa) are what a provider can
do while fine-tuning on a user's data: change the data, add a loss term, or choose the batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset

from vaccine.data.records import Record
from vaccine.data.tokenize import CompletionCollator, CompletionDataset
from vaccine.trainer import VaccineConfig, VaccineTrainer

if TYPE_CHECKING:
    from vaccine.finetune_trainer import FinetuneTrainer


@dataclass
class DataContext:
    """How records become tensors in this run (shared by the stage and its defense)."""

    tokenizer: Any
    template: str = "chat"
    max_length: int = 256

    def dataset(self, records: list[Record]) -> CompletionDataset:
        return CompletionDataset(records, self.tokenizer, template=self.template, max_length=self.max_length)

    def collator(self) -> CompletionCollator:
        return CompletionCollator(self.tokenizer)

    def loader(self, records: list[Record], batch_size: int, seed: int) -> DataLoader:
        """A seeded, shuffled loader over ``records`` (defenses that draw their own batches use it)."""
        return DataLoader(
            self.dataset(records),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            collate_fn=self.collator(),
        )


class AlignMethod:
    """An alignment-stage method: its knobs are dataclass fields of the subclass."""

    name: ClassVar[str]
    config_class: ClassVar[type[VaccineConfig]] = VaccineConfig
    trainer_class: ClassVar[type[VaccineTrainer]] = VaccineTrainer

    def config_overrides(self) -> dict[str, Any]:
        """Fields of ``config_class`` this method sets (e.g. Vaccine's rho and tau)."""
        return {}

    def build_config(self, training_args: dict[str, Any]) -> VaccineConfig:
        return self.config_class(**{**training_args, **self.config_overrides()})

    def train_dataset(self, records: list[Record], data: DataContext) -> Dataset:
        return data.dataset(records)

    def collator(self, data: DataContext) -> Any:
        return data.collator()


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

    name: ClassVar[str]
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
        self, trainer: FinetuneTrainer, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any
    ) -> torch.Tensor | None:
        """An extra loss term for this micro-batch, or None."""
        return None
