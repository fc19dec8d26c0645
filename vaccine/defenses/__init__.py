"""Fine-tune-stage defenses, one module each (ewc, kl, lisa, vlguard, none), on the protocol in
:mod:`vaccine.finetune_trainer`: ``DEFENSES.build("ewc", lam=10)``. Importing this package registers all of
them. The alignment-stage methods (sft, vaccine, repnoise) are in :mod:`vaccine.methods` (``METHODS``).
"""

from vaccine.defenses import ewc, kl, lisa, none, vlguard  # noqa: F401  (registration)
from vaccine.defenses.registry import DEFENSES

__all__ = ["DEFENSES"]
