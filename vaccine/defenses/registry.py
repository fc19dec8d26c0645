"""The fine-tune-stage defenses by name (``--defense``): each defense module registers itself here with
``@DEFENSES.register("<name>")``; its dataclass fields are its knobs (``--defense-arg KEY=VALUE``)."""

from __future__ import annotations

from vaccine.finetune_trainer import FinetuneDefense
from vaccine.registry import Registry

DEFENSES: Registry[type[FinetuneDefense]] = Registry("fine-tune-stage defense", "defense")
