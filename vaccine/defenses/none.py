"""No fine-tune-stage defense: the plain attack (also how Non-aligned and SFT/Vaccine models are attacked)."""

from __future__ import annotations

from dataclasses import dataclass

from vaccine.defenses.registry import register
from vaccine.finetune_trainer import FinetuneDefense


@register("none", stage="finetune")
@dataclass
class NoDefense(FinetuneDefense):
    """Fine-tune on the user's data as uploaded."""
