"""Vlguard (Zong et al. 2024): mix safety samples into the user's fine-tuning data."""

from __future__ import annotations

from dataclasses import dataclass

from vaccine.data.mixing import mix_in
from vaccine.data.records import Record
from vaccine.defenses.registry import DEFENSES
from vaccine.finetune_trainer import FinetuneContext, FinetuneDefense


@DEFENSES.register("vlguard")
@dataclass
class Vlguard(FinetuneDefense):
    """Add m alignment (harmful prompt -> safe answer) samples to the user's data, shuffled in."""

    m: int = 100
    uses_alignment_data = True

    def prepare_data(self, records: list[Record], context: FinetuneContext) -> list[Record]:
        return mix_in(records, context.alignment_records, self.m, context.seed, extra_name="alignment data")
