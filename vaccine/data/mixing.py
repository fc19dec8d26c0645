"""The attacker's upload: n samples of a benign task of which floor(p*n) are harmful, shuffled."""

from __future__ import annotations

import math
import random

from vaccine.data.records import Record
from vaccine.errors import ConfigError, DataError, SettingError


def harmful_count(p: float, n: int) -> int:
    """floor(p * n), robust to float noise (0.1 * 30 is 3.0000000000000004, 0.7 * 10 is 6.999...)."""
    return math.floor(round(p * n, 9))


def validate_mix(p: float, n: int) -> None:
    if not 0.0 <= p <= 1.0:
        raise SettingError("p", f"the harmful ratio must be in [0, 1]; got {p}")
    if n < 1:
        raise SettingError("n", f"the number of fine-tuning samples must be >= 1; got {n}")


def mix_harmful(
    benign: list[Record],
    harmful: list[Record],
    p: float,
    n: int,
    seed: int,
    *,
    benign_name: str = "benign task",
    harmful_name: str = "harmful set",
) -> list[Record]:
    """floor(p*n) harmful pairs plus n - floor(p*n) benign ones, each drawn without replacement, shuffled.

    Asking for more samples than a source holds is an error: silently training on fewer samples would
    make results incomparable across runs.
    """
    validate_mix(p, n)
    k = harmful_count(p, n)
    if k > len(harmful):
        raise DataError(f"p={p}, n={n} needs {k} harmful samples but the {harmful_name} has {len(harmful)}")
    if n - k > len(benign):
        raise DataError(f"n={n} needs {n - k} benign samples but the {benign_name} has {len(benign)}")
    rng = random.Random(seed)
    mixed = rng.sample(harmful, k) + rng.sample(benign, n - k)
    rng.shuffle(mixed)
    return mixed


def mix_in(records: list[Record], extra: list[Record], m: int, seed: int, *, extra_name: str) -> list[Record]:
    """Add m samples of ``extra`` (e.g. Vlguard's safety data) to ``records`` and shuffle."""
    if m < 0:
        raise ConfigError(f"the number of samples to mix in must be >= 0; got {m}")
    if m > len(extra):
        raise DataError(f"asked to mix in {m} samples but the {extra_name} has {len(extra)}")
    rng = random.Random(seed)
    mixed = records + rng.sample(extra, m)
    rng.shuffle(mixed)
    return mixed
