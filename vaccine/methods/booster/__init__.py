"""Booster (Huang et al., ICLR 2025, "Booster: Tackling Harmful Fine-tuning for Large Language Models via
Attenuating Harmful Perturbation"): an alignment-stage defense that uses harmful data.

It minimises ``L_align(w) + lam * (L_harm(w) - L_harm(w - alpha * g_harm / ||g_harm||))``: the alignment loss,
plus how much one normalised harmful gradient step would lower the harmful loss. Making that drop small makes
the aligned weights a place from which harmful fine-tuning makes little progress. Defaults are the paper's
scripts': lam=5, alpha=0.1. Three forward/backward passes per step (alignment, harmful at ``w``, harmful at
the shifted weights).

- :mod:`.config`: :class:`BoosterConfig` (lam, alpha);
- :mod:`.trainer`: :class:`BoosterTrainer`, where the term and its gradient are computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaccine.methods.base import METHODS
from vaccine.methods.paired import PairedMethod

from .config import BoosterConfig
from .trainer import BoosterTrainer

__all__ = ["Booster", "BoosterConfig", "BoosterTrainer"]


@METHODS.register("booster")
@dataclass
class Booster(PairedMethod):
    """Align while attenuating the harmful loss's drop after a simulated harmful step (Huang et al. 2025)."""

    lam: float = 5.0
    alpha: float = 0.1
    config_class = BoosterConfig
    trainer_class = BoosterTrainer

    def config_overrides(self) -> dict[str, Any]:
        return {"lam": self.lam, "alpha": self.alpha}
