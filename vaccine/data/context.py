"""DataContext: how records become tensors in one run, shared by a stage and its method or defense."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vaccine.data.image_prompts import is_processor
from vaccine.data.image_tokenize import VisionCollator, VisionCompletionDataset
from vaccine.data.records import Record
from vaccine.data.tokenize import CompletionCollator, CompletionDataset
from vaccine.errors import DataError


@dataclass
class DataContext:
    """How records become tensors in this run (shared by the stage and its defense). ``tokenizer`` is the
    model's tokenizer, or a vision-language model's processor: then records may carry images
    (:mod:`vaccine.data.image_tokenize`) and text-only records go through the processor too."""

    tokenizer: Any
    template: str = "chat"
    max_length: int = 256

    def dataset(self, records: list[Record]) -> Dataset:
        if is_processor(self.tokenizer):
            return VisionCompletionDataset(records, self.tokenizer, self.template, self.max_length)
        with_image = next((r for r in records if r.image is not None), None)
        if with_image is not None:
            where = with_image.meta.get("where") or repr(with_image.prompt[:60])
            raise DataError(
                f"{where}: this record comes with an image ({with_image.image}), but the model loaded as a "
                "text-only model; image+text data needs a vision-language model"
            )
        return CompletionDataset(records, self.tokenizer, template=self.template, max_length=self.max_length)

    def collator(self) -> CompletionCollator | VisionCollator:
        if is_processor(self.tokenizer):
            return VisionCollator(self.tokenizer)
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
