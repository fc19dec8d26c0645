"""Vaccine (Huang et al., NeurIPS 2024): perturbation-aware alignment; with ``layers_per_step > 0``,
T-Vaccine (Liu et al. 2024): only that many attention blocks are perturbed per step, drawn with probability
proportional to their gradient norm on harmful probe data and drawn again every ``resample_every`` steps.

- :mod:`.config`: :class:`VaccineConfig`, ``TrainingArguments`` plus rho, tau, layer choice, norm scope;
- :mod:`.perturb`: where eps is computed: find the attention outputs, take their gradient, add eps;
- :mod:`.trainer`: :class:`VaccineTrainer`, the two-pass perturbation-aware step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaccine.data.context import DataContext
from vaccine.data.records import seeded_subset
from vaccine.data.resolve import load_records
from vaccine.methods.base import METHODS, AlignMethod

from .config import VaccineConfig
from .trainer import VaccineTrainer

__all__ = ["Vaccine", "VaccineConfig", "VaccineTrainer"]


@METHODS.register("vaccine")
@dataclass
class Vaccine(AlignMethod):
    """Align under worst-case perturbations of every attention output (tau > 1: Accelerated Vaccine)."""

    rho: float = 2.0
    tau: int = 1
    perturb_modules: str | None = None
    perturbation_norm: str = "batch"
    layers_per_step: int = 0  # T-Vaccine when > 0: see VaccineConfig
    resample_every: int = 20
    probe_data: str = "harmful-defense"  # T-Vaccine's harmful probe: disjoint from the attack's split
    probe_samples: int = 200
    config_class = VaccineConfig
    trainer_class = VaccineTrainer

    def config_overrides(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "tau": self.tau,
            "perturb_modules": self.perturb_modules,
            "perturbation_norm": self.perturbation_norm,
            "layers_per_step": self.layers_per_step,
            "resample_every": self.resample_every,
        }

    def trainer_kwargs(self, data: DataContext) -> dict[str, Any]:
        """T-Vaccine's probe: ``probe_samples`` harmful pairs (a fixed seeded draw), in batches of 8."""
        if self.layers_per_step <= 0:
            return {}
        probe = seeded_subset(load_records(self.probe_data), self.probe_samples, seed=0)
        return {"probe_batches": list(data.loader(probe, batch_size=8, seed=0))}
