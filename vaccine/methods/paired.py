"""What alignment-stage methods that also train on harmful data share (RepNoise, Booster): the harmful split
as a knob, batches that pair each alignment example with a harmful one (:mod:`vaccine.data.paired`), and a
trainer that keeps the harmful columns the model's forward does not name."""

from __future__ import annotations

from dataclasses import dataclass

from vaccine.data.context import DataContext
from vaccine.data.paired import HARMFUL_KEYS, PairedCollator, PairedDataset, build_paired_dataset
from vaccine.data.records import Record
from vaccine.data.resolve import load_records
from vaccine.metered import MeteredTrainer
from vaccine.methods.base import AlignMethod


@dataclass
class PairedMethod(AlignMethod):
    """An alignment method whose batches carry a harmful half. By default that half comes from the built-in
    ``harmful-defense`` split, which is disjoint from the ``harmful`` split the attack draws from."""

    harmful: str = "harmful-defense"

    def train_dataset(self, records: list[Record], data: DataContext) -> PairedDataset:
        harmful = load_records(self.harmful)
        return build_paired_dataset(records, harmful, data.tokenizer, data.template, data.max_length)

    def collator(self, data: DataContext) -> PairedCollator:
        return PairedCollator(data.tokenizer)


class PairedTrainer(MeteredTrainer):
    """A metered trainer whose batches may carry ``harmful_*`` columns (kept through column removal)."""

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns += [key for key in HARMFUL_KEYS if key not in self._signature_columns]
