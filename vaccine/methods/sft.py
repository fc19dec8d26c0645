"""SFT: plain supervised alignment on (harmful prompt -> safe answer) pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaccine.methods.base import METHODS, AlignMethod
from vaccine.methods.vaccine import VaccineConfig, VaccineTrainer


@METHODS.register("sft")
@dataclass
class SFT(AlignMethod):
    """Supervised alignment on refusals, no perturbation (the paper's SFT baseline).

    Trained as Vaccine with ``rho=0``, the paper's limit, which is exactly a plain ``Trainer``.
    """

    config_class = VaccineConfig
    trainer_class = VaccineTrainer

    def config_overrides(self) -> dict[str, Any]:
        return {"rho": 0.0}
