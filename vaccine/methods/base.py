"""AlignMethod: what an alignment-stage method decides (config class, trainer class, data) and nothing else.

An alignment-stage method (SFT, Vaccine, RepNoise) chooses how the aligned model is trained; the alignment
stage (:mod:`vaccine.align`) does the rest: it loads data and model, attaches LoRA, builds the method's
config from the run's ``TrainingArguments`` fields plus :meth:`AlignMethod.config_overrides`, and trains
with ``trainer_class`` on :meth:`AlignMethod.train_dataset` and :meth:`AlignMethod.collator`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from torch.utils.data import Dataset
from transformers import TrainingArguments

from vaccine.data.context import DataContext
from vaccine.data.records import Record
from vaccine.registry import Registry

if TYPE_CHECKING:
    from vaccine.metered import MeteredTrainer


class AlignMethod:
    """An alignment-stage method: its knobs are dataclass fields of the subclass.

    A subclass sets ``config_class`` (a ``TrainingArguments`` subclass holding its training knobs) and
    ``trainer_class`` (a :class:`~vaccine.metered.MeteredTrainer` subclass that accepts that config).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TrainingArguments]]
    trainer_class: ClassVar[type[MeteredTrainer]]

    def config_overrides(self) -> dict[str, Any]:
        """Fields of ``config_class`` this method sets (e.g. Vaccine's rho and tau)."""
        return {}

    def build_config(self, training_args: dict[str, Any]) -> TrainingArguments:
        return self.config_class(**{**training_args, **self.config_overrides()})

    def train_dataset(self, records: list[Record], data: DataContext) -> Dataset:
        return data.dataset(records)

    def collator(self, data: DataContext) -> Any:
        return data.collator()

    def trainer_kwargs(self, data: DataContext) -> dict[str, Any]:
        """Extra keyword arguments for ``trainer_class`` (T-Vaccine's harmful probe batches)."""
        return {}


# Alignment-stage methods by name (``--method``); each method package registers itself here.
METHODS: Registry[type[AlignMethod]] = Registry("alignment method", "method")
