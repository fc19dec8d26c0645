"""SFT: plain supervised alignment on (harmful prompt -> safe answer) pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaccine.defenses.base import AlignMethod
from vaccine.defenses.registry import register


@register("sft", stage="align")
@dataclass
class SFT(AlignMethod):
    """Supervised alignment on refusals, no perturbation (the paper's SFT baseline)."""

    def config_overrides(self) -> dict[str, Any]:
        return {"rho": 0.0}
