"""Batches for alignment-stage methods that also train on harmful data (RepNoise, Booster): each alignment
example paired with a harmful one, under ``harmful_*`` keys, so both halves follow the Trainer's order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from vaccine.data.image_prompts import is_processor
from vaccine.data.records import Record
from vaccine.data.tokenize import CompletionCollator, CompletionDataset
from vaccine.errors import ConfigError, DataError

HARMFUL_PREFIX = "harmful_"
_KEYS = ("input_ids", "attention_mask", "labels")
HARMFUL_KEYS = tuple(HARMFUL_PREFIX + key for key in _KEYS)


class PairedDataset(Dataset):
    """Harmless example i with harmful example i mod len(harmful): one epoch is one pass over the alignment
    data, and a shorter harmful set is cycled rather than truncating the alignment set."""

    def __init__(self, harmless: Dataset, harmful: Dataset) -> None:
        if len(harmless) == 0 or len(harmful) == 0:
            raise DataError(
                f"this method needs harmless and harmful examples, got {len(harmless)} and {len(harmful)}"
            )
        self.harmless = harmless
        self.harmful = harmful

    def __len__(self) -> int:
        return len(self.harmless)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.harmless[index])
        harmful = self.harmful[index % len(self.harmful)]
        item.update({HARMFUL_PREFIX + key: harmful[key] for key in _KEYS})
        return item


class PairedCollator:
    """Pads each half on its own (the halves have unrelated lengths) with :class:`CompletionCollator`."""

    def __init__(
        self, tokenizer: Any = None, pad_token_id: int | None = None, pad_to_multiple_of: int | None = None
    ) -> None:
        self.collator = CompletionCollator(tokenizer, pad_token_id, pad_to_multiple_of)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        harmless = self.collator([{key: f[key] for key in _KEYS} for f in features])
        harmful = self.collator([{key: f[HARMFUL_PREFIX + key] for key in _KEYS} for f in features])
        return {**harmless, **{HARMFUL_PREFIX + key: value for key, value in harmful.items()}}


def build_paired_dataset(
    harmless_records: Sequence[Record],
    harmful_records: Sequence[Record],
    tokenizer: Any,
    template: str = "chat",
    max_length: int = 256,
) -> PairedDataset:
    """Alignment records (harmful prompt -> safe answer) paired with harmful ones (-> harmful answer)."""
    if is_processor(tokenizer):
        raise ConfigError(
            "RepNoise and Booster pair text examples only; on a vision-language model use sft or vaccine"
        )
    return PairedDataset(
        CompletionDataset(harmless_records, tokenizer, template, max_length),
        CompletionDataset(harmful_records, tokenizer, template, max_length),
    )


def split_paired(inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the alignment batch, the harmful batch) of a paired batch; the caller's dict is left whole (the
    Trainer may reuse it, e.g. to count tokens). A batch without harmful keys gives an empty harmful half."""
    harmful = {key[len(HARMFUL_PREFIX) :]: inputs[key] for key in HARMFUL_KEYS if key in inputs}
    return {key: value for key, value in inputs.items() if key not in HARMFUL_KEYS}, harmful
