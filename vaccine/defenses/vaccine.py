"""Vaccine (Huang et al., NeurIPS 2024): perturbation-aware alignment; see vaccine/trainer.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaccine.defenses.base import AlignMethod
from vaccine.defenses.registry import register


@register("vaccine", stage="align")
@dataclass
class Vaccine(AlignMethod):
    """Align under worst-case perturbations of every attention output (tau > 1: Accelerated Vaccine)."""

    rho: float = 2.0
    tau: int = 1
    perturb_modules: str | None = None
    perturbation_norm: str = "batch"

    def config_overrides(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "tau": self.tau,
            "perturb_modules": self.perturb_modules,
            "perturbation_norm": self.perturbation_norm,
        }
