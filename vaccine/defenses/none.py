"""No fine-tune-stage defense: the plain attack (also how Non-aligned and SFT/Vaccine models are attacked)."""

from __future__ import annotations

from dataclasses import dataclass

from vaccine.defenses.registry import DEFENSES
from vaccine.finetune_trainer import FinetuneDefense


@DEFENSES.register("none")
@dataclass
class NoDefense(FinetuneDefense):
    """Fine-tune on the user's data as uploaded."""
