"""Alignment-stage methods, one package (or module) per method, in the style of PEFT's ``tuners/<method>/``.

- :mod:`.base`: :class:`AlignMethod`, the protocol: a config class, a trainer class, the training data;
- :mod:`.sft`: SFT, which is Vaccine with ``rho=0`` (the paper's limit: exactly a plain ``Trainer``);
- :mod:`.vaccine`: Vaccine and Accelerated Vaccine (config, ``perturb`` where eps is computed, trainer);
- :mod:`.repnoise`: RepNoise (config, losses, trainer);
- :mod:`.booster`: Booster (config, trainer);
- :mod:`.paired`: what the methods that train on harmful data share (RepNoise, Booster).

Adding a method: a new package ``vaccine/methods/<name>/`` whose ``__init__.py`` holds a dataclass
subclass of :class:`AlignMethod` (its fields are the knobs) decorated with
``@METHODS.register("<name>")`` (the registry in :mod:`.base`), plus one import line below.
The CLI (``--method <name> --method-arg KEY=VALUE``) and the experiment grids then find it by name.
Fine-tune-stage defenses live in :mod:`vaccine.defenses` and register the same way in ``DEFENSES``.
"""

from __future__ import annotations

from vaccine.methods.base import METHODS, AlignMethod
from vaccine.methods.booster import Booster, BoosterConfig, BoosterTrainer
from vaccine.methods.repnoise import RepNoise, RepNoiseConfig, RepNoiseTrainer
from vaccine.methods.sft import SFT
from vaccine.methods.vaccine import Vaccine, VaccineConfig, VaccineTrainer

__all__ = [
    "SFT",
    "Booster",
    "BoosterConfig",
    "BoosterTrainer",
    "METHODS",
    "AlignMethod",
    "RepNoise",
    "RepNoiseConfig",
    "RepNoiseTrainer",
    "Vaccine",
    "VaccineConfig",
    "VaccineTrainer",
]
