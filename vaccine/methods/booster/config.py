"""BoosterConfig: ``TrainingArguments`` plus Booster's knobs, validated when built (as TRL's configs are)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from vaccine.errors import SettingError


@dataclass
class BoosterConfig(TrainingArguments):
    """Training arguments for :class:`~vaccine.methods.booster.trainer.BoosterTrainer`."""

    lam: float = field(
        default=5.0,
        metadata={
            "help": "Weight of the harmful-loss drop after one harmful step (Booster's scripts: 5; 0 = SFT)."
        },
    )
    alpha: float = field(
        default=0.1,
        metadata={"help": "Length of the simulated harmful step, a normalised gradient step (Booster: 0.1)."},
    )

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise SettingError("lam", f"must be >= 0; got {self.lam}")
        if self.alpha <= 0:
            raise SettingError("alpha", f"must be > 0; got {self.alpha}")
        super().__post_init__()
