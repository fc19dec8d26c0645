"""DataContext: how records become tensors in one run, shared by a stage and its method or defense."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from vaccine.data.records import Record
from vaccine.data.tokenize import CompletionCollator, CompletionDataset


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
