"""Post-hoc methods: each module registers itself in ``REPAIRS`` when imported here."""

from vaccine.repairs import antidote, safety_finetune  # noqa: F401  (registration)
from vaccine.repairs.base import REPAIRS, RepairMethod

__all__ = ["REPAIRS", "RepairMethod"]
