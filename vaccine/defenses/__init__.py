"""Defenses, by name: ``registry.build("ewc", lam=10)``. Importing this package registers all of them.

The fine-tune-stage defenses live here, one module each (ewc, kl, lisa, vlguard, none), on the protocol in
:mod:`vaccine.finetune_trainer`; the alignment-stage methods (sft, vaccine, repnoise) live in
:mod:`vaccine.methods` and share this registry, so importing it registers them too.
"""

from vaccine import methods  # noqa: F401  (registration of the alignment-stage methods)
from vaccine.defenses import ewc, kl, lisa, none, vlguard  # noqa: F401  (registration)
from vaccine.defenses.registry import DEFENSES, build, get, knobs, names

__all__ = ["DEFENSES", "build", "get", "knobs", "names"]
