"""Defenses, by name: ``registry.build("ewc", lam=10)``. Importing this package registers all of them."""

from vaccine.defenses import ewc, kl, lisa, none, repnoise, sft, vaccine, vlguard  # noqa: F401  (registration)
from vaccine.defenses.registry import DEFENSES, build, get, knobs, names

__all__ = ["DEFENSES", "build", "get", "knobs", "names"]
