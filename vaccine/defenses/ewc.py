"""EWC (Kirkpatrick et al. 2017) as a fine-tune-stage baseline: stay where the alignment data cares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from vaccine.defenses.registry import DEFENSES
from vaccine.errors import ConfigError
from vaccine.finetune_trainer import FinetuneContext, FinetuneDefense, FinetuneTrainer


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def diagonal_fisher(
    trainer: FinetuneTrainer, loader: DataLoader, params: dict[str, torch.nn.Parameter], batches: int
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: the mean squared gradient of the alignment loss, per parameter."""
    model = trainer.model
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it is
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    seen = 0
    for batch in loader:
        if seen == batches:
            break
        loss = model(**trainer.prepare_inputs(batch)).loss
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), grad in zip(params.items(), grads, strict=True):
            if grad is not None:
                fisher[name] += grad.detach().float().pow(2)
        seen += 1
    model.train(was_training)
    return {name: f / max(seen, 1) for name, f in fisher.items()}


@DEFENSES.register("ewc")
@dataclass
class EWC(FinetuneDefense):
    """lam * sum_i F_i (w_i - w0_i)^2 with the diagonal Fisher F of the alignment loss (paper baseline).

    ``normalize`` divides F by its mean so that ``lam`` does not depend on the model's gradient scale.
    """

    lam: float = 1.0
    fisher_batches: int = 20
    normalize: bool = True
    uses_alignment_data = True
    _anchor: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _fisher: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise ConfigError(f"ewc: lam must be >= 0; got {self.lam}")
        if self.fisher_batches < 1:
            raise ConfigError(f"ewc: fisher_batches must be >= 1; got {self.fisher_batches}")

    def setup(self, trainer: FinetuneTrainer, context: FinetuneContext) -> None:
        params = trainable_parameters(trainer.model)
        loader = context.data.loader(
            context.alignment_records, trainer.args.per_device_train_batch_size, context.seed
        )
        self._fisher = diagonal_fisher(trainer, loader, params, self.fisher_batches)
        if self.normalize:
            mean = torch.cat([f.flatten() for f in self._fisher.values()]).mean()
            if mean > 0:
                self._fisher = {name: f / mean for name, f in self._fisher.items()}
        self._anchor = {name: p.detach().clone() for name, p in params.items()}

    def penalty(self, trainer: FinetuneTrainer, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any):
        params = trainable_parameters(trainer.model)
        total = sum(
            (self._fisher[name] * (p.float() - self._anchor[name].float()).pow(2)).sum()
            for name, p in params.items()
        )
        return self.lam * total
