"""RepNoiseConfig: ``TrainingArguments`` plus RepNoise's knobs, validated when built."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from vaccine.errors import ConfigError


@dataclass
class RepNoiseConfig(TrainingArguments):
    """Training arguments for :class:`~vaccine.methods.repnoise.trainer.RepNoiseTrainer`.

    RepNoise does not perturb, so there is no ``rho``: Vaccine's eps (shaped like the harmless batch) would
    also hit the harmful forward pass.
    """

    alpha: float = field(
        default=1.0,
        metadata={"help": "Weight of the bounded gradient ascent on the harmful answer's CE (paper: 1)."},
    )
    beta: float = field(
        default=0.001,
        metadata={"help": "Weight of the MMD pushing harmful hidden states toward N(0, I) (paper: 0.001)."},
    )
    noise_tokens: int = field(
        default=256,
        metadata={
            "help": "At most this many harmful-answer tokens per step enter the MMD (randomly subsampled): "
            "the MMD costs O(tokens^2) per layer."
        },
    )

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if int(self.noise_tokens) != self.noise_tokens or self.noise_tokens < 2:
            raise ConfigError(f"noise_tokens must be an integer >= 2, got {self.noise_tokens}")
        super().__post_init__()
