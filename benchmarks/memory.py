"""Peak memory of a block of work: accelerator memory on CUDA, resident set size on CPU.

The window is :mod:`vaccine.peak_memory`'s, as the trainers' own metric: the peak is reset when the block
starts, so contenders compared in one process do not inherit each other's peaks; before it, freed memory
is given back, so one contender's leftovers do not count in the next one's baseline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from vaccine.peak_memory import peak_memory_mb, release_freed_memory, reset_peak_memory, resident_memory_mb


@dataclass
class Peak:
    baseline_mb: float = 0.0
    peak_mb: float = 0.0

    @property
    def added_mb(self) -> float:
        return self.peak_mb - self.baseline_mb


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Peak]:
    """Measure the peak while the block runs; the result fills in when the block exits."""
    release_freed_memory()
    result = Peak()
    if device.type == "cuda":
        result.baseline_mb = torch.cuda.memory_allocated(device) / 2**20
    else:
        result.baseline_mb = resident_memory_mb()
    reset_peak_memory(device)
    try:
        yield result
    finally:
        result.peak_mb = peak_memory_mb(device)
