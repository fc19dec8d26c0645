"""Lisa (Huang et al. 2024, "Lazy Safety Alignment"): the first defense here beyond the Vaccine paper.

Bi-state optimization: fine-tuning alternates between alignment steps (on alignment data) and user
steps, and a proximal term (rho/2) * ||w - w_switch||^2 keeps each state near the weights it started from,
so neither state drags the model far from what the other one learned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from vaccine.defenses.ewc import trainable_parameters
from vaccine.defenses.registry import DEFENSES
from vaccine.errors import ConfigError
from vaccine.finetune_trainer import FinetuneContext, FinetuneDefense, FinetuneTrainer


@DEFENSES.register("lisa")
@dataclass
class Lisa(FinetuneDefense):
    """Alternate alignment_steps alignment steps with finetune_steps user steps; proximal weight rho.

    Alignment steps take the place of user steps: with the defaults, 1 step in 10 trains on alignment data.
    """

    alignment_steps: int = 1
    finetune_steps: int = 9
    rho: float = 1.0
    uses_alignment_data = True
    _state: str | None = field(default=None, init=False, repr=False)
    _anchor: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _batches: Iterator[dict[str, Any]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.alignment_steps < 0 or self.finetune_steps < 1:
            raise ConfigError("lisa: alignment_steps must be >= 0 and finetune_steps >= 1")
        if self.rho < 0:
            raise ConfigError(f"lisa: rho must be >= 0; got {self.rho}")

    def setup(self, trainer: FinetuneTrainer, context: FinetuneContext) -> None:
        loader = context.data.loader(
            context.alignment_records, trainer.args.per_device_train_batch_size, context.seed
        )
        self._batches = self._cycle(loader)

    @staticmethod
    def _cycle(loader: DataLoader) -> Iterator[dict[str, Any]]:
        while True:
            yield from loader

    def state(self, step: int) -> str:
        period = self.alignment_steps + self.finetune_steps
        return "align" if step % period < self.alignment_steps else "finetune"

    def next_inputs(self, trainer: FinetuneTrainer, inputs: dict[str, Any]) -> dict[str, Any]:
        state = self.state(trainer.state.global_step)
        if state != self._state:
            self._state = state
            self._anchor = {n: p.detach().clone() for n, p in trainable_parameters(trainer.model).items()}
        trainer.record("alignment_step", 1.0 if state == "align" else 0.0)
        return next(self._batches) if state == "align" else inputs

    def penalty(self, trainer: FinetuneTrainer, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any):
        params = trainable_parameters(trainer.model)
        drift = sum((p.float() - self._anchor[n].float()).pow(2).sum() for n, p in params.items())
        return 0.5 * self.rho * drift
