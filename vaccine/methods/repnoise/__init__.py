"""RepNoise (Rosati et al. 2024, "Representation Noising"): an alignment-stage defense that uses harmful data.

Each step sees a harmless batch (harmful prompt -> safe answer) and a harmful batch (harmful prompt -> harmful
answer), paired by :class:`~vaccine.data.paired.PairedDataset`, and minimises

    L = CE(harmless) + beta * noise_loss(harmful) - alpha * log(1 + min(CE(harmful), log V))

- ``noise_loss`` is an RBF-kernel MMD between the harmful answer's hidden states (every decoder layer) and
  samples of N(0, I): the harmful knowledge is not just made unlikely but scrambled in the representations,
  so a later fine-tuning attack has less to recover;
- the last term is the paper's gradient ascent on the harmful answer, ``-alpha * log(1 + CE)``, clamped at
  ``log V`` (V = vocabulary size, the CE of a uniform prediction). Without the clamp the term has no lower
  bound: the model can drive the loss to -inf by anti-predicting harmful tokens, which wrecks the shared
  representations and does not make the answer any less available than noise already is. With it the loss is
  bounded below by ``-alpha * log(1 + log V)`` and the ascent simply stops once the answer is as unlikely as a
  uniform guess. (``-log(1 - exp(-CE))`` is bounded too, but its gradient ``1 / (exp(CE) - 1)`` vanishes
  exponentially, so the paper's alpha=1 would barely act on a model that is only somewhat unsure.)

Defaults are the paper's: alpha=1, beta=0.001. The paper also adds logit-lens CE terms for every layer; this
implementation keeps the final-layer CE only.

- :mod:`.config`: :class:`RepNoiseConfig` (alpha, beta, noise_tokens);
- :mod:`.losses`: :func:`gaussian_mmd`, :func:`representation_noise_loss`, :func:`bounded_ascent`;
- :mod:`.trainer`: :class:`RepNoiseTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaccine.methods.base import METHODS
from vaccine.methods.paired import PairedMethod

from .config import RepNoiseConfig
from .losses import bounded_ascent, gaussian_mmd, representation_noise_loss
from .trainer import RepNoiseTrainer

__all__ = [
    "RepNoise",
    "RepNoiseConfig",
    "RepNoiseTrainer",
    "bounded_ascent",
    "gaussian_mmd",
    "representation_noise_loss",
]


@METHODS.register("repnoise")
@dataclass
class RepNoise(PairedMethod):
    """Push harmful representations toward Gaussian noise, keep the harmless loss (Rosati et al. 2024).

    Uses harmful data at alignment: by default the built-in ``harmful-defense`` split, which is disjoint from
    the ``harmful`` split the attack draws from.
    """

    alpha: float = 1.0
    beta: float = 0.001
    noise_tokens: int = 256
    config_class = RepNoiseConfig
    trainer_class = RepNoiseTrainer

    def config_overrides(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "noise_tokens": self.noise_tokens}
