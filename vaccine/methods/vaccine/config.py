"""VaccineConfig: ``TrainingArguments`` plus Vaccine's knobs, validated when built (as TRL's configs are)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from vaccine.errors import ConfigError, SettingError


@dataclass
class VaccineConfig(TrainingArguments):
    """Training arguments for :class:`~vaccine.methods.vaccine.trainer.VaccineTrainer`.

    ``rho=0`` is plain SFT; ``tau>1`` is Accelerated Vaccine (perturb only every tau-th step).
    """

    rho: float = field(
        default=2.0,
        metadata={
            "help": "Perturbation budget: total L2 norm of eps over all layers (paper default 2; 0 = SFT)."
        },
    )
    tau: int = field(
        default=1,
        metadata={"help": "Perturb every tau-th optimizer step (1 = Vaccine, >1 = Accelerated Vaccine)."},
    )
    perturb_modules: str | None = field(
        default=None,
        metadata={
            "help": "Regex over module names selecting the outputs to perturb; default: every decoder "
            "layer's self-attention block, found by structure."
        },
    )
    perturbation_norm: str = field(
        default="batch",
        metadata={
            "help": "'batch': one norm over the whole optimizer-step batch, as in the paper (rho is the "
            "batch's budget); 'sample': one norm per sample, so a sample's eps ignores its batch-mates."
        },
    )

    layers_per_step: int = field(
        default=0,
        metadata={
            "help": "T-Vaccine: perturb only this many attention blocks per step, drawn with probability "
            "proportional to their harmful-gradient norm (0: every block, Vaccine; T-Vaccine's script: 8)."
        },
    )
    resample_every: int = field(
        default=20,
        metadata={
            "help": "T-Vaccine: optimizer steps between two draws of the perturbed blocks (script: 20)."
        },
    )

    def __post_init__(self) -> None:
        if int(self.layers_per_step) != self.layers_per_step or self.layers_per_step < 0:
            raise SettingError("layers_per_step", f"must be an integer >= 0; got {self.layers_per_step}")
        if int(self.resample_every) != self.resample_every or self.resample_every < 1:
            raise SettingError("resample_every", f"must be an integer >= 1; got {self.resample_every}")
        if self.rho < 0:
            raise ConfigError(f"rho must be >= 0, got {self.rho}")
        if int(self.tau) != self.tau or self.tau < 1:
            raise ConfigError(f"tau must be an integer >= 1, got {self.tau}")
        if self.perturbation_norm not in ("batch", "sample"):
            raise ConfigError(
                f"perturbation_norm must be 'batch' or 'sample', got {self.perturbation_norm!r}"
            )
        super().__post_init__()
