"""RepairMethod: a post-hoc defense, run by the provider on the user's fine-tuned model before serving it.

The post-hoc stage (:mod:`vaccine.posthoc`) hands a method the attacked model as its adapters, merged in
order; the method writes one new adapter into the run folder and says which adapters, merged in order, make
the repaired model (:meth:`RepairMethod.repaired_adapters`). Knowing that before the stage runs lets a grid
plan the repaired model's evaluation up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from transformers import TrainingArguments

from vaccine.lora import LoraSettings
from vaccine.registry import Registry


class RepairRun(Protocol):
    """What a repair reads from its stage's spec (:class:`vaccine.posthoc.PosthocSpec` is one)."""

    model: str
    dtype: str
    template: str
    trust_remote_code: bool
    seed: int
    attacked: list[Path]
    out: Path
    batch_size: int
    max_length: int
    lora: LoraSettings
    training: TrainingArguments


class RepairMethod:
    """A post-hoc method: its knobs are dataclass fields of the subclass."""

    name: ClassVar[str]

    def repaired_adapters(self, attacked: list[Path], adapter: Path) -> list[Path]:
        """The repaired model as adapters merged in order, given the attacked model's and the new one."""
        raise NotImplementedError

    def repair(self, spec: RepairRun) -> dict[str, Any]:
        """Write ``spec.out / "adapter"`` and return the details for the stage's summary."""
        raise NotImplementedError


# Post-hoc methods by name (``--method`` of ``vaccine posthoc``); each module registers itself here.
REPAIRS: Registry[type[RepairMethod]] = Registry("post-hoc method", "method")
