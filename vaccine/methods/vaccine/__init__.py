"""Vaccine (Huang et al., NeurIPS 2024): perturbation-aware alignment.

- :mod:`.config`: :class:`VaccineConfig`, ``TrainingArguments`` plus rho, tau, layer choice, norm scope;
- :mod:`.perturb`: where eps is computed: find the attention outputs, take their gradient, add eps;
- :mod:`.trainer`: :class:`VaccineTrainer`, the two-pass perturbation-aware step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    config_class = VaccineConfig
    trainer_class = VaccineTrainer

    def config_overrides(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "tau": self.tau,
            "perturb_modules": self.perturb_modules,
            "perturbation_norm": self.perturbation_norm,
        }
